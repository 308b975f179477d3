package inferapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/agent/internal/inferapi"
	"github.com/tensorguard/tensorguardflow/agent/internal/inference"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxruntimetest"
)

// source serves one model, or none.
type source struct {
	mu sync.RWMutex
	m  *inferapi.Served
}

func (s *source) WithServing(fn func(inferapi.Served) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.m == nil {
		return inferapi.ErrNoModel
	}
	return fn(*s.m)
}

// loadMLP loads a 4→16→3 MLP through the real ONNX Runtime backend.
func loadMLP(t testing.TB) (inference.Model, onnxmodel.MLP) {
	t.Helper()
	onnxruntimetest.Init(t)
	mlp := onnxmodel.NewMLP(4, 16, 3, 7)
	b, err := mlp.Encode()
	if err != nil {
		t.Fatal(err)
	}
	rt := &inference.ONNXRuntime{}
	m, err := rt.Load(map[string][]byte{"m.onnx": b}, inference.Meta{Name: "mlp", Version: "1.0.0", Runtime: "onnx", Model: "m.onnx"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, mlp
}

type response struct {
	ModelName    string `json:"model_name"`
	ModelVersion string `json:"model_version"`
	ID           string `json:"id"`
	Outputs      []struct {
		Name     string    `json:"name"`
		DataType string    `json:"datatype"`
		Shape    []int64   `json:"shape"`
		Data     []float64 `json:"data"`
	} `json:"outputs"`
	Error string `json:"error"`
}

func do(t *testing.T, h http.Handler, method, path, body string) (int, response, string) {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var r response
	raw := rec.Body.String()
	if err := json.Unmarshal([]byte(raw), &r); err != nil && rec.Code != http.StatusOK {
		t.Fatalf("%s %s: %d with a body that is not JSON: %q", method, path, rec.Code, raw)
	}
	return rec.Code, r, raw
}

func inferBody(x []float32) string {
	b, _ := json.Marshal(x)
	return fmt.Sprintf(`{"id":"r1","inputs":[{"name":%q,"shape":[1,4],"datatype":"FP32","data":%s}]}`, onnxmodel.MLPInput, b)
}

func TestInferMatchesReference(t *testing.T) {
	m, mlp := loadMLP(t)
	stats := inference.NewStats()
	h := inferapi.NewHandler(inferapi.Config{Source: &source{m: &inferapi.Served{Name: "mlp", Version: "1.0.0", Model: m}}, Stats: stats})
	x := []float32{0.5, -1.25, 3, 0.125}
	want, err := mlp.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/v2/models/mlp/infer", "/v2/models/mlp/versions/1.0.0/infer"} {
		code, r, raw := do(t, h, "POST", path, inferBody(x))
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, code, raw)
		}
		if r.ModelName != "mlp" || r.ModelVersion != "1.0.0" || r.ID != "r1" || len(r.Outputs) != 3 {
			t.Fatalf("response %s", raw)
		}
		for _, o := range r.Outputs {
			switch o.Name {
			case onnxmodel.MLPLogits:
				if o.DataType != "FP32" || fmt.Sprint(o.Shape) != "[1 3]" {
					t.Fatalf("logits %s %v", o.DataType, o.Shape)
				}
				for i, v := range o.Data {
					if math.Abs(v-float64(want.Logits[i])) > 1e-5 {
						t.Errorf("logit %d = %g, reference %g", i, v, want.Logits[i])
					}
				}
			case onnxmodel.MLPProbs:
				for i, v := range o.Data {
					if math.Abs(v-float64(want.Probs[i])) > 1e-5 {
						t.Errorf("prob %d = %g, reference %g", i, v, want.Probs[i])
					}
				}
			case onnxmodel.MLPClass:
				if o.DataType != "INT64" || o.Data[0] != float64(want.Class[0]) {
					t.Errorf("class %s %v, reference %d", o.DataType, o.Data, want.Class)
				}
			default:
				t.Errorf("unexpected output %q", o.Name)
			}
		}
	}
	// Nested data, and a request for one output only.
	body := fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,4],"datatype":"FP32","data":[[0.5,-1.25,3,0.125]]}],"outputs":[{"name":%q}]}`,
		onnxmodel.MLPInput, onnxmodel.MLPClass)
	code, r, raw := do(t, h, "POST", "/v2/models/mlp/infer", body)
	if code != http.StatusOK || len(r.Outputs) != 1 || r.Outputs[0].Name != onnxmodel.MLPClass {
		t.Fatalf("nested/one output: %d %s", code, raw)
	}
	snap := stats.Snapshot()
	if len(snap) != 1 || snap[0].Count != 3 || snap[0].Errors != 0 || snap[0].Backend != "onnxruntime" {
		t.Errorf("stats %+v", snap)
	}
}

func TestBadRequests(t *testing.T) {
	m, _ := loadMLP(t)
	stats := inference.NewStats()
	h := inferapi.NewHandler(inferapi.Config{Source: &source{m: &inferapi.Served{Name: "mlp", Version: "1.0.0", Model: m}},
		Stats: stats, MaxBodyBytes: 4096})
	in := onnxmodel.MLPInput
	tests := []struct {
		name, path, body string
		code             int
		msg              string
	}{
		{"unknown model", "/v2/models/other/infer", inferBody([]float32{1, 2, 3, 4}), 404, "unknown model"},
		{"unknown version", "/v2/models/mlp/versions/2.0.0/infer", inferBody([]float32{1, 2, 3, 4}), 404, "no version"},
		{"malformed JSON", "/v2/models/mlp/infer", `{"inputs":[`, 400, "malformed"},
		{"unknown field", "/v2/models/mlp/infer", `{"input":[]}`, 400, "unknown field"},
		{"trailing data", "/v2/models/mlp/infer", inferBody([]float32{1, 2, 3, 4}) + `{}`, 400, "after the JSON"},
		{"missing input", "/v2/models/mlp/infer", `{"inputs":[]}`, 400, "missing input"},
		{"unknown input", "/v2/models/mlp/infer", `{"inputs":[{"name":"z","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`, 400, "unknown input"},
		{"wrong datatype", "/v2/models/mlp/infer", fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,4],"datatype":"INT64","data":[1,2,3,4]}]}`, in), 400, "is FP32"},
		{"wrong shape", "/v2/models/mlp/infer", fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,5],"datatype":"FP32","data":[1,2,3,4,5]}]}`, in), 400, "shape"},
		{"wrong rank", "/v2/models/mlp/infer", fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[4],"datatype":"FP32","data":[1,2,3,4]}]}`, in), 400, "rank"},
		{"too few values", "/v2/models/mlp/infer", fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,4],"datatype":"FP32","data":[1,2,3]}]}`, in), 400, "3 values"},
		{"too many values", "/v2/models/mlp/infer", fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,4],"datatype":"FP32","data":[1,2,3,4,5]}]}`, in), 400, "more than"},
		{"string value", "/v2/models/mlp/infer", fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,4],"datatype":"FP32","data":[1,"2",3,4]}]}`, in), 400, "unexpected"},
		{"no shape", "/v2/models/mlp/infer", fmt.Sprintf(`{"inputs":[{"name":%q,"datatype":"FP32","data":[1,2,3,4]}]}`, in), 400, "shape is required"},
		{"empty dim", "/v2/models/mlp/infer", fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[0,4],"datatype":"FP32","data":[]}]}`, in), 400, "empty"},
		{"negative dim", "/v2/models/mlp/infer", fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[-1,4],"datatype":"FP32","data":[1,2,3,4]}]}`, in), 400, "negative"},
		{"huge shape", "/v2/models/mlp/infer", fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[4294967296,4294967296],"datatype":"FP32","data":[1]}]}`, in), 400, "more than"},
		{"duplicate input", "/v2/models/mlp/infer", fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,4],"datatype":"FP32","data":[1,2,3,4]},{"name":%q,"shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`, in, in), 400, "twice"},
		{"unknown output", "/v2/models/mlp/infer", fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"q"}]}`, in), 400, "unknown output"},
		{"binary extension", "/v2/models/mlp/infer", fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, in), 400, "binary"},
		{"oversized body", "/v2/models/mlp/infer", fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,4],"datatype":"FP32","data":[%s1]}]}`, in, strings.Repeat("1, ", 3000)), 413, "exceeds"},
		{"FP32 overflow", "/v2/models/mlp/infer", fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,4],"datatype":"FP32","data":[1e39,2,3,4]}]}`, in), 400, "not an FP32"},
		{"no route", "/v3/x", "", 404, "no route"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := "POST"
			if tc.path == "/v3/x" {
				method = "GET"
			}
			code, r, raw := do(t, h, method, tc.path, tc.body)
			if code != tc.code || !strings.Contains(r.Error, tc.msg) {
				t.Fatalf("got %d %s, want %d with %q", code, raw, tc.code, tc.msg)
			}
		})
	}
	// The model still serves after all that.
	if code, _, raw := do(t, h, "POST", "/v2/models/mlp/infer", inferBody([]float32{1, 2, 3, 4})); code != 200 {
		t.Fatalf("after bad requests: %d %s", code, raw)
	}
	if s := stats.Snapshot(); len(s) != 1 || s[0].Errors == 0 || s[0].Count <= s[0].Errors {
		t.Errorf("bad requests to the model are counted as errors: %+v", s)
	}
}

func TestMetadataAndReadiness(t *testing.T) {
	m, _ := loadMLP(t)
	src := &source{}
	h := inferapi.NewHandler(inferapi.Config{Source: src, ServerVersion: "v-test"})
	if code, _, raw := do(t, h, "GET", "/v2/health/ready", ""); code != 503 || !strings.Contains(raw, `"ready":false`) {
		t.Fatalf("ready without a model: %d %s", code, raw)
	}
	if code, r, _ := do(t, h, "POST", "/v2/models/mlp/infer", inferBody([]float32{1, 2, 3, 4})); code != 503 || !strings.Contains(r.Error, "not loaded") {
		t.Fatalf("infer without a model: %d %s", code, r.Error)
	}
	if code, _, _ := do(t, h, "GET", "/v2/health/live", ""); code != 200 {
		t.Fatalf("live: %d", code)
	}
	src.m = &inferapi.Served{Name: "mlp", Version: "1.0.0", Model: m}
	if code, _, _ := do(t, h, "GET", "/v2/health/ready", ""); code != 200 {
		t.Fatalf("ready: %d", code)
	}
	if code, _, raw := do(t, h, "GET", "/v2/models/mlp/ready", ""); code != 200 || !strings.Contains(raw, `"ready":true`) {
		t.Fatalf("model ready: %d %s", code, raw)
	}
	if code, _, _ := do(t, h, "GET", "/v2/models/nope/ready", ""); code != 404 {
		t.Fatalf("unknown model ready: %d", code)
	}
	code, _, raw := do(t, h, "GET", "/v2/models/mlp", "")
	if code != 200 {
		t.Fatalf("metadata: %d %s", code, raw)
	}
	var meta struct {
		Name     string   `json:"name"`
		Versions []string `json:"versions"`
		Platform string   `json:"platform"`
		Inputs   []struct {
			Name, DataType string
			Shape          []int64
		} `json:"inputs"`
	}
	if err := json.Unmarshal([]byte(raw), &meta); err != nil {
		t.Fatal(err)
	}
	if meta.Name != "mlp" || meta.Versions[0] != "1.0.0" || meta.Platform != "onnxruntime" || len(meta.Inputs) != 1 ||
		meta.Inputs[0].Name != onnxmodel.MLPInput || meta.Inputs[0].DataType != "FP32" || fmt.Sprint(meta.Inputs[0].Shape) != "[-1 4]" {
		t.Fatalf("metadata %s", raw)
	}
	if code, _, raw := do(t, h, "GET", "/v2", ""); code != 200 || !strings.Contains(raw, "v-test") {
		t.Fatalf("server metadata: %d %s", code, raw)
	}
}

// TestConcurrentInferences runs many requests at once over a real Unix
// socket; each must get its own input's answer.
func TestConcurrentInferences(t *testing.T) {
	m, mlp := loadMLP(t)
	dir, err := os.MkdirTemp("", "tgsock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "infer.sock")
	l, err := inferapi.ListenUnix(sock, "")
	if err != nil {
		t.Fatal(err)
	}
	h := inferapi.NewHandler(inferapi.Config{Source: &source{m: &inferapi.Served{Name: "mlp", Version: "1.0.0", Model: m}}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inferapi.Serve(ctx, h, 5*time.Second, l) }()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				x := []float32{float32(g), float32(i), float32(g - i), 0.5}
				resp, err := client.Post("http://agent/v2/models/mlp/infer", "application/json", strings.NewReader(inferBody(x)))
				if err != nil {
					errs <- err
					return
				}
				var r response
				err = json.NewDecoder(resp.Body).Decode(&r)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					errs <- fmt.Errorf("status %d %v %s", resp.StatusCode, err, r.Error)
					return
				}
				want, _ := mlp.Forward(x)
				for _, o := range r.Outputs {
					if o.Name == onnxmodel.MLPLogits && math.Abs(o.Data[0]-float64(want.Logits[0])) > 1e-5 {
						errs <- fmt.Errorf("goroutine %d request %d: logit %g, want %g", g, i, o.Data[0], want.Logits[0])
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind after shutdown: %v", err)
	}
}

func TestListenUnix(t *testing.T) {
	dir, err := os.MkdirTemp("", "tgsock")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "a.sock")
	l, err := inferapi.ListenUnix(sock, fmt.Sprint(os.Getgid()))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != inferapi.SocketMode {
		t.Fatalf("socket mode %v, %v; want %o", fi.Mode(), err, inferapi.SocketMode)
	}
	// In use by a live listener: refused, and the live socket is kept.
	if _, err := inferapi.ListenUnix(sock, ""); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second listener: %v", err)
	}
	// A stale socket (its listener gone, file left as after SIGKILL) is replaced.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	l2, err := inferapi.ListenUnix(sock, "")
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	l2.Close()
	// Not a socket: refused, the file is untouched.
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep"), 0o600)
	if _, err := inferapi.ListenUnix(file, ""); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Fatal("the regular file was changed")
	}
	if _, err := inferapi.ListenUnix(filepath.Join(dir, strings.Repeat("x", 120)), ""); err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("long path: %v", err)
	}
	if _, err := inferapi.ListenUnix(filepath.Join(dir, "b.sock"), "no-such-group-tg"); err == nil {
		t.Fatal("unknown group accepted")
	}
}

func TestCheckLoopback(t *testing.T) {
	for addr, ok := range map[string]bool{
		"127.0.0.1:8001": true, "[::1]:8001": true, "127.0.0.1:0": true,
		"0.0.0.0:8001": false, ":8001": false, "192.168.1.2:80": false, "localhost:80": false, "127.0.0.1": false,
	} {
		if err := inferapi.CheckLoopback(addr); (err == nil) != ok {
			t.Errorf("CheckLoopback(%q) = %v, want ok=%v", addr, err, ok)
		}
	}
}

// FuzzInferBody feeds arbitrary bodies to the handler: it must answer
// with a JSON status, never panic, and the model must keep serving.
func FuzzInferBody(f *testing.F) {
	f.Add(inferBody([]float32{1, 2, 3, 4}))
	f.Add(`{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[[1,2],[3,4]]}]}`)
	f.Add(`{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,,2]}]}`)
	f.Add(`{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1 2 3 4]}]}`)
	f.Add(`{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4,]}]}`)
	f.Add(`{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[[1,2,3,4]]]]}]}`)
	f.Add(`{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[-1e-3,2E5,+3,4]}]}`)
	m, _ := loadMLP(f)
	h := inferapi.NewHandler(inferapi.Config{Source: &source{m: &inferapi.Served{Name: "mlp", Version: "1", Model: m}}})
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/v2/models/mlp/infer", strings.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == 500 {
			t.Fatalf("500 for %q: %s", body, rec.Body)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("invalid JSON answer %q", rec.Body)
		}
	})
}

// TestInferLM serves the small byte-level LM the trainer exports: INT64
// token ids in, logits out, compared with the Go reference; token ids the
// model cannot take are 400s, not crashes.
func TestInferLM(t *testing.T) {
	cfg := onnxmodel.LMConfig{Vocab: 256, Context: 16, Dim: 32, Layers: 2, Heads: 4, FF: 64}
	h, lm := loadLM(t, cfg)
	tokens := [][]int64{{'h', 'e', 'l', 'l', 'o', ',', ' ', 'w'}, {'e', 'd', 'g', 'e', ' ', 'M', 'L', '!'}}
	want, err := lm.Forward(tokens)
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := json.Marshal(tokens)
	body := fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[2,8],"datatype":"INT64","data":%s}]}`, onnxmodel.LMInput, ids)
	code, r, raw := do(t, h, "POST", "/v2/models/lm/infer", body)
	if code != 200 || len(r.Outputs) != 1 || fmt.Sprint(r.Outputs[0].Shape) != "[2 8 256]" {
		t.Fatalf("%d %.300s", code, raw)
	}
	var maxErr float64
	for b := range 2 {
		for p := range 8 {
			for v := range 256 {
				maxErr = max(maxErr, math.Abs(r.Outputs[0].Data[(b*8+p)*256+v]-float64(want[b][p][v])))
			}
		}
	}
	if maxErr > 1e-4 {
		t.Fatalf("logits differ from the reference by %g", maxErr)
	}
	for name, body := range map[string]string{
		"token out of range":      fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,2],"datatype":"INT64","data":[1,300]}]}`, onnxmodel.LMInput),
		"longer than the context": fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,17],"datatype":"INT64","data":[%s1]}]}`, onnxmodel.LMInput, strings.Repeat("1,", 16)),
		"fractional id":           fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,2],"datatype":"INT64","data":[1,2.5]}]}`, onnxmodel.LMInput),
		"FP32 ids":                fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,2],"datatype":"FP32","data":[1,2]}]}`, onnxmodel.LMInput),
	} {
		if code, r, raw := do(t, h, "POST", "/v2/models/lm/infer", body); code != 400 || r.Error == "" {
			t.Errorf("%s: %d %s", name, code, raw)
		} else {
			t.Logf("%s: %d %s", name, code, r.Error)
		}
	}
}

type netConn = net.Conn

func dialUnix(ctx context.Context, sock string) (net.Conn, error) {
	return (&net.Dialer{}).DialContext(ctx, "unix", sock)
}
