package onnxruntime_test

import (
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
)

// BenchmarkRunMLP measures Session.Run (one intra-op thread) on an MLP
// against the pure-Go reference forward pass of the same network, in the
// same run, and reports the ratio (ort/go > 1: ONNX Runtime is slower). On
// the 4×8×3 test MLP the per-call overhead (cgo, tensor wrapping, output
// copies) dominates, so the ratio prices that overhead; on a 256×1024×10 MLP
// the arithmetic dominates and ONNX Runtime's kernels show.
//
//	go test -run '^$' -bench RunMLP ./cgo/onnxruntime/
func BenchmarkRunMLP(b *testing.B) {
	wide := onnxmodel.NewMLP(256, 1024, 10, 2)
	for _, c := range []struct {
		name  string
		mlp   onnxmodel.MLP
		batch int
	}{
		{"mlp=4x8x3/batch=1", testMLP, 1},
		{"mlp=4x8x3/batch=64", testMLP, 64},
		{"mlp=256x1024x10/batch=1", wide, 1},
		{"mlp=256x1024x10/batch=64", wide, 64},
	} {
		b.Run(c.name, func(b *testing.B) {
			model, err := c.mlp.Encode()
			if err != nil {
				b.Fatal(err)
			}
			s := newSession(b, model, onnxruntime.Options{IntraOpThreads: 1})
			x := onnxmodel.RandomInputs(c.batch*c.mlp.In, 1)
			in := map[string]onnxruntime.Tensor{
				onnxmodel.MLPInput: {Shape: []int64{int64(c.batch), int64(c.mlp.In)}, Float32: x},
			}
			// Correct before fast.
			got, err := s.Run(in)
			if err == nil {
				err = checkOutputs(c.mlp, x, got)
			}
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := s.Run(in); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			ortNs := float64(b.Elapsed().Nanoseconds()) / float64(b.N)

			// The baseline: reference passes for as long as ONNX Runtime ran
			// (at most as many passes, at least one), timed the same way.
			start := time.Now()
			n := 0
			for n < b.N && (n == 0 || time.Since(start) < b.Elapsed()) {
				if _, err := c.mlp.Forward(x); err != nil {
					b.Fatal(err)
				}
				n++
			}
			goNs := float64(time.Since(start).Nanoseconds()) / float64(n)
			b.ReportMetric(goNs, "go-ns/op")
			b.ReportMetric(ortNs/goNs, "ort/go")
		})
	}
}
