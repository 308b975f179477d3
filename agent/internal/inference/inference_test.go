package inference_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tensorguard/tensorguardflow/agent/internal/inference"
)

// fakeBackend is a backend whose availability and loading can fail.
type fakeBackend struct {
	name    string
	runs    []string
	unavail error
	loadErr error
	loads   int
}

func (b *fakeBackend) Name() string { return b.name }
func (b *fakeBackend) Runs(rt string) bool {
	for _, r := range b.runs {
		if r == rt {
			return true
		}
	}
	return false
}
func (b *fakeBackend) Available() error { return b.unavail }
func (b *fakeBackend) Load(map[string][]byte, inference.Meta) (inference.Model, error) {
	b.loads++
	if b.loadErr != nil {
		return nil, b.loadErr
	}
	return fakeModel(b.name), nil
}

type fakeModel string

func (m fakeModel) Backend() string               { return string(m) }
func (fakeModel) Inputs() []inference.TensorInfo  { return nil }
func (fakeModel) Outputs() []inference.TensorInfo { return nil }
func (fakeModel) Close() error                    { return nil }
func (fakeModel) Infer(map[string]inference.Tensor) (map[string]inference.Tensor, error) {
	return nil, nil
}

func TestSelector(t *testing.T) {
	both := []string{inference.RuntimeTensorRT, inference.RuntimeONNX}
	ortRuns := []string{inference.RuntimeONNXRuntime, inference.RuntimeONNX}
	tests := []struct {
		name     string
		trt, ort *fakeBackend
		runtime  string
		want     string // backend name, or an error substring prefixed by "err:"
	}{
		{"onnx prefers tensorrt", &fakeBackend{name: "tensorrt", runs: both}, &fakeBackend{name: "onnxruntime", runs: ortRuns}, "onnx", "tensorrt"},
		{"onnx skips an unavailable tensorrt", &fakeBackend{name: "tensorrt", runs: both, unavail: fmt.Errorf("%w: no GPU", inference.ErrUnavailable)},
			&fakeBackend{name: "onnxruntime", runs: ortRuns}, "onnx", "onnxruntime"},
		{"onnx falls back when tensorrt cannot build", &fakeBackend{name: "tensorrt", runs: both, loadErr: errors.New("unsupported op")},
			&fakeBackend{name: "onnxruntime", runs: ortRuns}, "onnx", "onnxruntime"},
		{"explicit tensorrt is not substituted", &fakeBackend{name: "tensorrt", runs: both, loadErr: errors.New("unsupported op")},
			&fakeBackend{name: "onnxruntime", runs: ortRuns}, "tensorrt", "err:unsupported op"},
		{"explicit tensorrt unavailable", &fakeBackend{name: "tensorrt", runs: both, unavail: fmt.Errorf("%w: not in this build", inference.ErrUnavailable)},
			&fakeBackend{name: "onnxruntime", runs: ortRuns}, "tensorrt", "err:not in this build"},
		{"explicit onnxruntime", &fakeBackend{name: "tensorrt", runs: both}, &fakeBackend{name: "onnxruntime", runs: ortRuns}, "onnxruntime", "onnxruntime"},
		{"unknown runtime", &fakeBackend{name: "tensorrt", runs: both}, &fakeBackend{name: "onnxruntime", runs: ortRuns}, "tflite", "err:no backend"},
		{"everything fails", &fakeBackend{name: "tensorrt", runs: both, loadErr: errors.New("trt broke")},
			&fakeBackend{name: "onnxruntime", runs: ortRuns, loadErr: errors.New("ort broke")}, "onnx", "err:ort broke"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := inference.NewSelector(nil, tc.trt, tc.ort)
			m, err := s.Load(nil, inference.Meta{Name: "m", Runtime: tc.runtime})
			if msg, isErr := strings.CutPrefix(tc.want, "err:"); isErr {
				if err == nil || !strings.Contains(err.Error(), msg) {
					t.Fatalf("got %v, %v; want an error with %q", m, err, msg)
				}
				return
			}
			if err != nil || m.Backend() != tc.want {
				t.Fatalf("got %v, %v; want %s", m, err, tc.want)
			}
		})
	}
}

func TestStatsQuantiles(t *testing.T) {
	s := inference.NewStats()
	k := inference.ModelKey{Name: "m", Version: "1", Backend: "onnxruntime"}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 250 {
				// 1000 observations spread evenly over 0.1–1.1 ms.
				d := 100*time.Microsecond + time.Duration(g*250+i)*time.Microsecond
				s.Observe(k, d, i%100 == 0)
			}
		}()
	}
	wg.Wait()
	snap := s.Snapshot()
	if len(snap) != 1 || snap[0].Count != 1000 || snap[0].Errors != 12 || snap[0].Loaded {
		t.Fatalf("snapshot %+v", snap)
	}
	// The estimate interpolates inside the bucket holding the quantile, so it
	// is exact only up to the bucket width.
	for _, c := range []struct {
		q        float64
		lo, high time.Duration
	}{{0.5, 500 * time.Microsecond, 1000 * time.Microsecond}, {0.99, 1000 * time.Microsecond, 2500 * time.Microsecond}, {0.01, 0, 250 * time.Microsecond}} {
		if got := snap[0].Quantile(c.q); got < c.lo || got > c.high {
			t.Errorf("quantile %v = %v, want within [%v, %v]", c.q, got, c.lo, c.high)
		}
	}
	if mean := snap[0].Sum / time.Duration(snap[0].Count); mean < 590*time.Microsecond || mean > 610*time.Microsecond {
		t.Errorf("mean %v, want ~600µs", mean)
	}
	s.SetLoaded(k, true)
	if !s.Snapshot()[0].Loaded {
		t.Error("not loaded after SetLoaded")
	}
	if (inference.ModelSnapshot{}).Quantile(0.5) != 0 {
		t.Error("quantile of nothing is not 0")
	}
}

func TestCollectorAndThermal(t *testing.T) {
	root := t.TempDir()
	for i, z := range []struct{ typ, temp string }{{"cpu-thermal", "45500\n"}, {"gpu-thermal", "39000\n"}, {"broken", "n/a\n"}} {
		d := filepath.Join(root, fmt.Sprintf("thermal_zone%d", i))
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "type"), []byte(z.typ+"\n"), 0o644)
		os.WriteFile(filepath.Join(d, "temp"), []byte(z.temp), 0o644)
	}
	zones := inference.ReadThermal(root)
	if len(zones) != 2 || zones[0].Type != "cpu-thermal" || zones[0].Celsius != 45.5 || zones[1].Celsius != 39 {
		t.Fatalf("zones %+v", zones)
	}
	if z := inference.ReadThermal(filepath.Join(root, "none")); len(z) != 0 {
		t.Fatalf("zones of a machine without any: %+v", z)
	}

	s := inference.NewStats()
	k := inference.ModelKey{Name: "mnist", Version: "1.0.0", Backend: "onnxruntime"}
	s.SetLoaded(k, true)
	s.Observe(k, 300*time.Microsecond, false)
	s.Observe(k, 2*time.Millisecond, true)
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collector(root))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.Metric {
			switch {
			case m.Counter != nil:
				got[f.GetName()] = m.Counter.GetValue()
			case m.Histogram != nil:
				got[f.GetName()] = float64(m.Histogram.GetSampleCount())
			case m.Gauge != nil:
				got[f.GetName()] += m.Gauge.GetValue()
			}
		}
	}
	want := map[string]float64{"tg_inference_requests_total": 2, "tg_inference_errors_total": 1, "tg_inference_duration_seconds": 2,
		"tg_model_loaded": 1, "tg_device_temperature_celsius": 84.5}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s = %v, want %v (all: %v)", name, got[name], v, got)
		}
	}
}
