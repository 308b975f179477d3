package lm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/ golden files")

// microConfig is the smallest interesting LM: its checkpoint is about a
// kilobyte, a good golden file and fuzz seed.
func microConfig() onnxmodel.LMConfig {
	return onnxmodel.LMConfig{Vocab: 8, Context: 4, Dim: 4, Layers: 1, Heads: 2, FF: 6}
}

func microCheckpoint(t testing.TB) (onnxmodel.LM, []byte) {
	t.Helper()
	m, err := onnxmodel.NewLM(microConfig(), 1)
	if err != nil {
		t.Fatal(err)
	}
	b, err := EncodeCheckpoint(m)
	if err != nil {
		t.Fatal(err)
	}
	return m, b
}

// goldenMicroSHA256 pins the encoding: a change here is a format change
// (bump CheckpointVersion) or a change in onnxmodel.NewLM's draw.
const goldenMicroSHA256 = "c54041197c72fed3e87d4952beb05c4b279427c6c1719b955324d815384ad8b4"

func TestCheckpointGolden(t *testing.T) {
	m, b := microCheckpoint(t)
	path := filepath.Join("testdata", "micro.ckpt")
	if *updateGolden {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, golden) {
		t.Fatalf("encoding of the micro LM differs from %s (run with -update only for an intended format change)", path)
	}
	if h := CheckpointHash(golden); h != goldenMicroSHA256 {
		t.Errorf("golden hash %s, pinned %s", h, goldenMicroSHA256)
	}
	got, err := DecodeCheckpoint(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !sameLM(got, m) {
		t.Error("decoded golden differs from the model")
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	for _, cfg := range []onnxmodel.LMConfig{microConfig(), tinyConfig()} {
		m, err := onnxmodel.NewLM(cfg, 2)
		if err != nil {
			t.Fatal(err)
		}
		m.Blocks[0].BK[0] = float32(math.Copysign(0, -1)) // −0 survives bit for bit
		var buf bytes.Buffer
		hash, err := WriteCheckpoint(&buf, m)
		if err != nil {
			t.Fatal(err)
		}
		if want := 4*cfg.NumParams() + checkpointFixed + digestSize; int64(buf.Len()) <= want {
			t.Errorf("%v: %d bytes, less than the %d of data and fixed fields", cfg, buf.Len(), want)
		}
		got, gotHash, err := ReadCheckpoint(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		if gotHash != hash || !sameLM(got, m) {
			t.Errorf("%v: round trip changed the model or its hash", cfg)
		}
	}
}

// reseal recomputes the trailing digest, so that a mutation reaches the
// structural checks behind it.
func reseal(b []byte) []byte {
	b = bytes.Clone(b)
	if len(b) < digestSize {
		return b
	}
	sum := sha256.Sum256(b[:len(b)-digestSize])
	copy(b[len(b)-digestSize:], sum[:])
	return b
}

func TestCheckpointRefusesMalformed(t *testing.T) {
	_, good := microCheckpoint(t)
	dataStart := len(good) - digestSize - 4*int(microConfig().NumParams())
	set32 := func(off int, v uint32) func([]byte) []byte {
		return func(b []byte) []byte { binary.LittleEndian.PutUint32(b[off:], v); return reseal(b) }
	}
	cases := map[string]func([]byte) []byte{
		"empty":             func([]byte) []byte { return nil },
		"truncated":         func(b []byte) []byte { return b[:len(b)-1] },
		"truncated, sealed": func(b []byte) []byte { return reseal(b[:len(b)-5]) },
		"trailing byte":     func(b []byte) []byte { return append(b, 0) },
		"trailing, sealed": func(b []byte) []byte {
			return reseal(append(b[:len(b)-digestSize], append([]byte{0}, b[len(b)-digestSize:]...)...))
		},
		"bad magic":          func(b []byte) []byte { b[0] = 'X'; return reseal(b) },
		"flipped data bit":   func(b []byte) []byte { b[dataStart] ^= 1; return b },
		"flipped digest bit": func(b []byte) []byte { b[len(b)-1] ^= 1; return b },
		"version 2":          set32(8, 2),
		"zero vocab":         set32(12, 0),
		"heads not dividing": set32(28, 3),
		"huge layers":        set32(24, 1<<20),
		"tensor count":       set32(36, 19),
		"renamed tensor":     func(b []byte) []byte { b[42] = 'X'; return reseal(b) },
		"NaN weight":         set32(dataStart, math.Float32bits(float32(math.NaN()))),
		"infinite weight":    set32(dataStart+4, math.Float32bits(float32(math.Inf(-1)))),
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeCheckpoint(mutate(bytes.Clone(good))); !errors.Is(err, ErrInvalidCheckpoint) {
				t.Errorf("error %v, want ErrInvalidCheckpoint", err)
			}
		})
	}
	if _, err := EncodeCheckpoint(onnxmodel.LM{Config: microConfig()}); err == nil {
		t.Error("encoded an LM without weights")
	}
}

// FuzzLoadCheckpoint: decoding never panics, and whatever decodes
// re-encodes to exactly the same bytes (one encoding per model). Each
// input is also tried with its digest recomputed, so mutations get past
// the SHA-256 check to the parser.
func FuzzLoadCheckpoint(f *testing.F) {
	_, good := microCheckpoint(f)
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add(reseal(good[:60]))
	bad := bytes.Clone(good)
	binary.LittleEndian.PutUint32(bad[36:], 1000)
	f.Add(reseal(bad))
	f.Add([]byte(checkpointMagic))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, in := range [][]byte{data, reseal(data)} {
			m, err := DecodeCheckpoint(in)
			if err != nil {
				if !errors.Is(err, ErrInvalidCheckpoint) {
					t.Fatalf("error does not wrap ErrInvalidCheckpoint: %v", err)
				}
				continue
			}
			again, err := EncodeCheckpoint(m)
			if err != nil {
				t.Fatalf("decoded model does not encode: %v", err)
			}
			if !bytes.Equal(again, in) {
				t.Fatal("decoded checkpoint re-encodes differently")
			}
		}
	})
}
