package inferapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/agent/internal/inferapi"
	"github.com/tensorguard/tensorguardflow/agent/internal/inference"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxruntimetest"
)

// benchModel is a classifier of about half a millisecond on one core: an
// MLP taking a 28×28 image through 8192 hidden units to 10 classes.
func benchModel(b *testing.B, threads int) (inference.Model, []byte) {
	b.Helper()
	onnxruntimetest.Init(b)
	enc, err := onnxmodel.NewMLP(784, 8192, 10, 1).Encode()
	if err != nil {
		b.Fatal(err)
	}
	rt := &inference.ONNXRuntime{Options: onnxruntime.Options{IntraOpThreads: threads}}
	m, err := rt.Load(map[string][]byte{"m.onnx": enc}, inference.Meta{Name: "mnist", Version: "1.0.0", Runtime: "onnx", Model: "m.onnx"})
	if err != nil {
		b.Fatal(err)
	}
	return m, enc
}

func percentile(d []time.Duration, q float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// BenchmarkInferenceAPI compares a request through the agent's local API
// (HTTP over the Unix socket, JSON in and out, statistics recorded) with a
// direct in-process call of the same ONNX Runtime session, interleaved so
// both see the same machine. It reports the latency percentiles of both,
// their ratio (the API's overhead; the goal is ≤ 1.2× for a ~0.5 ms model),
// and the throughput of both with two clients.
//
//	go test -run '^$' -bench InferenceAPI -benchtime 2000x ./agent/internal/inferapi/
func BenchmarkInferenceAPI(b *testing.B) {
	m, _ := benchModel(b, 1)
	defer m.Close()
	dir, err := os.MkdirTemp("", "tgbench")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "i.sock")
	l, err := inferapi.ListenUnix(sock, "")
	if err != nil {
		b.Fatal(err)
	}
	h := inferapi.NewHandler(inferapi.Config{Source: &source{m: &inferapi.Served{Name: "mnist", Version: "1.0.0", Model: m}}, Stats: inference.NewStats()})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go inferapi.Serve(ctx, h, time.Second, l)
	client := unixClient(sock)

	x := onnxmodel.RandomInputs(784, 1)
	direct := func() error {
		_, err := m.Infer(map[string]inference.Tensor{onnxmodel.MLPInput: {Shape: []int64{1, 784}, Float32: x}})
		return err
	}
	body := requestBody(x)
	api := func() error {
		resp, err := client.Post("http://agent/v2/models/mnist/infer", "application/json", strings.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var r struct {
			Outputs []json.RawMessage `json:"outputs"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || resp.StatusCode != 200 || len(r.Outputs) != 3 {
			return fmt.Errorf("status %d, %d outputs, %v", resp.StatusCode, len(r.Outputs), err)
		}
		return nil
	}
	for range 50 { // warm up both paths
		if err := direct(); err != nil {
			b.Fatal(err)
		}
		if err := api(); err != nil {
			b.Fatal(err)
		}
	}
	var dl, al []time.Duration
	b.ResetTimer()
	for i := range b.N {
		// Alternate which goes first, so neither always finds warm caches.
		first, second, fl, sl := direct, api, &dl, &al
		if i%2 == 1 {
			first, second, fl, sl = api, direct, &al, &dl
		}
		t0 := time.Now()
		if err := first(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if err := second(); err != nil {
			b.Fatal(err)
		}
		*fl = append(*fl, t1.Sub(t0))
		*sl = append(*sl, time.Since(t1))
	}
	b.StopTimer()
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	b.ReportMetric(us(percentile(dl, 0.5)), "direct-p50-µs")
	b.ReportMetric(us(percentile(dl, 0.99)), "direct-p99-µs")
	b.ReportMetric(us(percentile(al, 0.5)), "api-p50-µs")
	b.ReportMetric(us(percentile(al, 0.99)), "api-p99-µs")
	b.ReportMetric(float64(percentile(al, 0.5))/float64(percentile(dl, 0.5)), "p50-ratio")
	b.ReportMetric(float64(percentile(al, 0.99))/float64(percentile(dl, 0.99)), "p99-ratio")
	// Throughput with two clients for a fixed time each.
	tput := func(fn func() error) float64 {
		var n atomic.Int64
		deadline := time.Now().Add(2 * time.Second)
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					if fn() == nil {
						n.Add(1)
					}
				}
			}()
		}
		wg.Wait()
		return float64(n.Load()) / 2
	}
	dt, at := tput(direct), tput(api)
	b.ReportMetric(dt, "direct-req/s")
	b.ReportMetric(at, "api-req/s")
	b.ReportMetric(dt/at, "tput-ratio")
}

// BenchmarkModelMemory loads the model several times and reports the
// resident memory each loaded copy costs, against the model's size.
//
//	go test -run '^$' -bench ModelMemory -benchtime 1x ./agent/internal/inferapi/
func BenchmarkModelMemory(b *testing.B) {
	const copies = 8
	m, enc := benchModel(b, 1)
	m.Close()
	for range b.N {
		runtime.GC()
		before := rss(b)
		var ms []inference.Model
		for range copies {
			mm, _ := benchModel(b, 1)
			ms = append(ms, mm)
		}
		runtime.GC()
		after := rss(b)
		for _, mm := range ms {
			mm.Close()
		}
		per := float64(after-before) / copies
		b.ReportMetric(per/(1<<20), "MiB/model")
		b.ReportMetric(float64(len(enc))/(1<<20), "model-MiB")
		b.ReportMetric(per/float64(len(enc)), "rss/model-size")
	}
}

func rss(b *testing.B) int64 {
	raw, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(raw))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

func unixClient(sock string) *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4, DialContext: func(ctx context.Context, _, _ string) (netConn, error) {
		return dialUnix(ctx, sock)
	}}}
}

func requestBody(x []float32) string {
	b, _ := json.Marshal(x)
	return fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,%d],"datatype":"FP32","data":%s}]}`, onnxmodel.MLPInput, len(x), b)
}
