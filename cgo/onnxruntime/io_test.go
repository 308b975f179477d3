//go:build cgo

package onnxruntime_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxruntimetest"
)

// TestReadIOMatchesORT: NewSession names a session's inputs and outputs
// from the pure-Go reader instead of loading the model twice, so the
// reader must agree with ONNX Runtime. Checked on our own models and on the
// models that ship with the binding's module (exported by PyTorch and
// skl2onnx: symbolic dimensions, float16, strings, sequences of maps, a
// zero-sized dimension, non-ASCII names).
func TestReadIOMatchesORT(t *testing.T) {
	t.Parallel()
	onnxruntimetest.Init(t)
	models := map[string][]byte{
		"mlp":          mlpBytes(t),
		"int64":        int64Model(t),
		"unknown rank": unknownRankModel(t),
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/yalue/onnxruntime_go").Output()
	if err != nil {
		t.Fatalf("locate the binding's module: %v", err)
	}
	files, err := filepath.Glob(filepath.Join(strings.TrimSpace(string(out)), "test_data", "*.onnx"))
	if err != nil || len(files) < 5 {
		t.Fatalf("the binding's test models: %v %v", files, err)
	}
	for _, f := range files {
		if filepath.Base(f) == "example_strings.onnx" {
			// Its StringNormalizer needs the en_US.UTF-8 locale installed,
			// which a Debian machine need not have; it is not ours to test.
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		models[filepath.Base(f)] = b
	}
	for name, b := range models {
		wantIn, wantOut, err := onnxruntime.ORTIO(b)
		if err != nil {
			t.Errorf("%s: ONNX Runtime: %v", name, err)
			continue
		}
		in, out, err := onnxmodel.ReadIO(b)
		if err != nil {
			t.Errorf("%s: ReadIO: %v", name, err)
			continue
		}
		if !declaredMatches(in, wantIn) || !declaredMatches(out, wantOut) {
			t.Errorf("%s:\nReadIO       %v -> %v\nONNX Runtime %v -> %v", name, in, out, wantIn, wantOut)
		}
	}
}

// declaredMatches compares inputs or outputs as the model declares them with
// ONNX Runtime's view, which shape inference may have made more specific for
// outputs: a dimension the model leaves open (-1) may be known to ONNX
// Runtime. (Its C API also reports an unknown rank as no dimensions.)
func declaredMatches(declared, ort []onnxruntime.TensorInfo) bool {
	if len(declared) != len(ort) {
		return false
	}
	for i, d := range declared {
		o := ort[i]
		if d.Name != o.Name || d.Type != o.Type || len(d.Shape) != len(o.Shape) {
			return false
		}
		for j, n := range d.Shape {
			if n >= 0 && n != o.Shape[j] {
				return false
			}
		}
	}
	return true
}

func TestCheckVersion(t *testing.T) {
	t.Parallel()
	for v, ok := range map[string]bool{
		"1.24.1": true, "1.24.0": true, "1.24.12": true,
		"1.25.0": false, "1.23.2": false, "1.2.4": false, "2.24.1": false,
		"1.240.0": false, "": false, "1.24": false,
	} {
		err := onnxruntime.CheckVersion(v)
		if (err == nil) != ok {
			t.Errorf("CheckVersion(%q) = %v", v, err)
		}
		if err != nil && !errors.Is(err, onnxruntime.ErrUnsupportedVersion) {
			t.Errorf("CheckVersion(%q) = %v, not ErrUnsupportedVersion", v, err)
		}
	}
}
