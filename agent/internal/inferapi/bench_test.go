package inferapi_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
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
// (HTTP over the Unix socket, statistics recorded), once with JSON in and
// out and once with the binary tensor data extension in and out, with a
// direct in-process call of the same ONNX Runtime session, interleaved so
// all three see the same machine. It reports the latency percentiles of
// each, the ratios to direct (the API's overhead; the goal is ≤ 1.2× for a
// ~0.5 ms model), and the throughput of each with two clients.
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
	binBody, binHeaderLen := binaryRequestBody(x)
	apiBinary := func() error {
		req, err := http.NewRequest("POST", "http://agent/v2/models/mnist/infer", bytes.NewReader(binBody))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Inference-Header-Content-Length", binHeaderLen)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = readBinaryResponse(resp, 3)
		return err
	}
	for range 50 { // warm up every path
		for _, fn := range []func() error{direct, api, apiBinary} {
			if err := fn(); err != nil {
				b.Fatal(err)
			}
		}
	}
	paths := []func() error{direct, api, apiBinary}
	lat := make([][]time.Duration, len(paths))
	b.ResetTimer()
	for i := range b.N {
		// Rotate which goes first, so none always finds warm caches.
		for k := range paths {
			j := (i + k) % len(paths)
			t0 := time.Now()
			if err := paths[j](); err != nil {
				b.Fatal(err)
			}
			lat[j] = append(lat[j], time.Since(t0))
		}
	}
	b.StopTimer()
	dl, al, bl := lat[0], lat[1], lat[2]
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	b.ReportMetric(us(percentile(dl, 0.5)), "direct-p50-µs")
	b.ReportMetric(us(percentile(dl, 0.99)), "direct-p99-µs")
	b.ReportMetric(us(percentile(al, 0.5)), "api-p50-µs")
	b.ReportMetric(us(percentile(al, 0.99)), "api-p99-µs")
	b.ReportMetric(float64(percentile(al, 0.5))/float64(percentile(dl, 0.5)), "p50-ratio")
	b.ReportMetric(float64(percentile(al, 0.99))/float64(percentile(dl, 0.99)), "p99-ratio")
	b.ReportMetric(us(percentile(bl, 0.5)), "bin-p50-µs")
	b.ReportMetric(us(percentile(bl, 0.99)), "bin-p99-µs")
	b.ReportMetric(float64(percentile(bl, 0.5))/float64(percentile(dl, 0.5)), "bin-p50-ratio")
	b.ReportMetric(float64(percentile(bl, 0.99))/float64(percentile(dl, 0.99)), "bin-p99-ratio")
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
	dt, at, bt := tput(direct), tput(api), tput(apiBinary)
	b.ReportMetric(dt, "direct-req/s")
	b.ReportMetric(at, "api-req/s")
	b.ReportMetric(dt/at, "tput-ratio")
	b.ReportMetric(bt, "bin-req/s")
	b.ReportMetric(dt/bt, "bin-tput-ratio")
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

// binaryRequestBody is x as a binary tensor data request asking for every
// output in binary, and the length of its JSON part.
func binaryRequestBody(x []float32) ([]byte, string) {
	header := fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,%d],"datatype":"FP32","parameters":{"binary_data_size":%d}}],"parameters":{"binary_data_output":true}}`,
		onnxmodel.MLPInput, len(x), 4*len(x))
	body := append([]byte(header), make([]byte, 0, 4*len(x))...)
	for _, v := range x {
		body = binary.LittleEndian.AppendUint32(body, math.Float32bits(v))
	}
	return body, strconv.Itoa(len(header))
}

// readBinaryResponse reads a 200 answer whose outputs are all binary, as a
// client would: the JSON part, then each output's floats (an INT64
// output's elements as floats too); it checks the framing.
func readBinaryResponse(resp *http.Response, outputs int) ([][]float32, error) {
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(resp.Header.Get("Inference-Header-Content-Length"))
	if resp.StatusCode != 200 || err != nil || n > len(raw) {
		return nil, fmt.Errorf("status %d, header %q: %.200s", resp.StatusCode, resp.Header.Get("Inference-Header-Content-Length"), raw)
	}
	var r struct {
		Outputs []struct {
			DataType   string `json:"datatype"`
			Parameters struct {
				Size int `json:"binary_data_size"`
			} `json:"parameters"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(raw[:n], &r); err != nil || len(r.Outputs) != outputs {
		return nil, fmt.Errorf("%d outputs, %v", len(r.Outputs), err)
	}
	bin := raw[n:]
	out := make([][]float32, len(r.Outputs))
	for i, o := range r.Outputs {
		if o.Parameters.Size > len(bin) {
			return nil, fmt.Errorf("output %d: %d bytes, %d left", i, o.Parameters.Size, len(bin))
		}
		if o.DataType == "INT64" {
			for j := 0; j+8 <= o.Parameters.Size; j += 8 {
				out[i] = append(out[i], float32(int64(binary.LittleEndian.Uint64(bin[j:]))))
			}
		} else {
			for j := 0; j+4 <= o.Parameters.Size; j += 4 {
				out[i] = append(out[i], math.Float32frombits(binary.LittleEndian.Uint32(bin[j:])))
			}
		}
		bin = bin[o.Parameters.Size:]
	}
	if len(bin) != 0 {
		return nil, fmt.Errorf("%d bytes after the outputs", len(bin))
	}
	return out, nil
}

func requestBody(x []float32) string {
	b, _ := json.Marshal(x)
	return fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,%d],"datatype":"FP32","data":%s}]}`, onnxmodel.MLPInput, len(x), b)
}
