package trainertest

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxruntimetest"
)

// SelfTestDiff runs an exported LM (model.onnx bytes) in ONNX Runtime on
// the first case of its self-test file (input_ids → logits, as
// trainer.LMPackageFiles writes it) and returns the largest absolute
// difference from the logits the trainer computed, and the file's
// tolerance. It ends the test if the model does not run or gives another
// number of logits.
func SelfTestDiff(t testing.TB, model, selftest []byte) (worst, tolerance float64) {
	t.Helper()
	onnxruntimetest.Init(t)
	sess, err := onnxruntime.NewSession(model, onnxruntime.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	var st struct {
		Tolerance float64
		Cases     []struct {
			Inputs, Outputs map[string]struct {
				Shape []int64
				Data  []float64
			}
		}
	}
	if err := json.Unmarshal(selftest, &st); err != nil || len(st.Cases) == 0 {
		t.Fatalf("self-test file: %v (%d cases)", err, len(st.Cases))
	}
	in := st.Cases[0].Inputs["input_ids"]
	ids := make([]int64, len(in.Data))
	for i, v := range in.Data {
		ids[i] = int64(v)
	}
	out, err := sess.Run(map[string]onnxruntime.Tensor{"input_ids": {Shape: in.Shape, Int64: ids}})
	if err != nil {
		t.Fatal(err)
	}
	got, want := out["logits"].Float32, st.Cases[0].Outputs["logits"].Data
	if len(got) != len(want) {
		t.Fatalf("logits: ONNX Runtime gives %d values, the self-test %d", len(got), len(want))
	}
	for i, v := range got {
		worst = max(worst, math.Abs(float64(v)-want[i]))
	}
	return worst, st.Tolerance
}
