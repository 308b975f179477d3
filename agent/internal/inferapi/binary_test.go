package inferapi_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/agent/internal/inferapi"
	"github.com/tensorguard/tensorguardflow/agent/internal/inference"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxruntimetest"
)

const headerLen = "Inference-Header-Content-Length"

func fp32Bytes(x []float32) []byte {
	b := make([]byte, 0, 4*len(x))
	for _, v := range x {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

func int64Bytes(x []int64) []byte {
	b := make([]byte, 0, 8*len(x))
	for _, v := range x {
		b = binary.LittleEndian.AppendUint64(b, uint64(v))
	}
	return b
}

// binaryBody is a binary-extension body: the JSON header, then bins.
func binaryBody(header string, bins ...[]byte) ([]byte, string) {
	b := []byte(header)
	for _, bin := range bins {
		b = append(b, bin...)
	}
	return b, strconv.Itoa(len(header))
}

// post sends body with the JSON part's length in hdr ("" for none).
func post(h http.Handler, path string, body []byte, hdr string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("POST", path, bytes.NewReader(body))
	if hdr != "" {
		req.Header.Set(headerLen, hdr)
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// output is one decoded output, whichever way it came back.
type output struct {
	dataType string
	shape    []int64
	binary   bool
	data     []float64
}

// readResponse decodes a 200 answer, JSON or binary, checking the binary
// framing: the header's length, each binary output's size matching its
// shape, and the sizes adding up to the rest of the body.
func readResponse(t *testing.T, rec *httptest.ResponseRecorder) (string, map[string]output) {
	t.Helper()
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	body := rec.Body.Bytes()
	jsonPart, bin := body, []byte(nil)
	if v := rec.Header().Get(headerLen); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n > len(body) {
			t.Fatalf("%s %q for a %d-byte body", headerLen, v, len(body))
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/octet-stream" {
			t.Errorf("binary response with Content-Type %q", ct)
		}
		jsonPart, bin = body[:n], body[n:]
	} else if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("JSON response with Content-Type %q", ct)
	}
	var r struct {
		ModelName    string `json:"model_name"`
		ModelVersion string `json:"model_version"`
		ID           string `json:"id"`
		Outputs      []struct {
			Name       string           `json:"name"`
			DataType   string           `json:"datatype"`
			Shape      []int64          `json:"shape"`
			Parameters map[string]int64 `json:"parameters"`
			Data       []float64        `json:"data"`
		} `json:"outputs"`
	}
	dec := json.NewDecoder(bytes.NewReader(jsonPart))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("response JSON part %q: %v", jsonPart, err)
	}
	outs := map[string]output{}
	for _, o := range r.Outputs {
		out := output{dataType: o.DataType, shape: o.Shape, data: o.Data}
		n := int64(1)
		for _, d := range o.Shape {
			n *= d
		}
		if size, ok := o.Parameters["binary_data_size"]; ok {
			if o.Data != nil {
				t.Fatalf("output %q has both data and binary_data_size", o.Name)
			}
			elem := map[string]int64{"FP32": 4, "INT64": 8}[o.DataType]
			if size != n*elem || size > int64(len(bin)) {
				t.Fatalf("output %q: binary_data_size %d for shape %v %s with %d bytes left", o.Name, size, o.Shape, o.DataType, len(bin))
			}
			out.binary = true
			for i := int64(0); i < n; i++ {
				if o.DataType == "FP32" {
					out.data = append(out.data, float64(math.Float32frombits(binary.LittleEndian.Uint32(bin[4*i:]))))
				} else {
					out.data = append(out.data, float64(int64(binary.LittleEndian.Uint64(bin[8*i:]))))
				}
			}
			bin = bin[size:]
		}
		if int64(len(out.data)) != n {
			t.Fatalf("output %q: %d values for shape %v", o.Name, len(out.data), o.Shape)
		}
		outs[o.Name] = out
	}
	if len(bin) != 0 {
		t.Fatalf("%d bytes after the binary outputs", len(bin))
	}
	return r.ID, outs
}

// TestBinaryRoundTrip sends the MLP the input of TestInferMatchesReference
// as JSON and as binary, asks for outputs as JSON, binary or a mix, and
// compares each with the Go reference.
func TestBinaryRoundTrip(t *testing.T) {
	m, mlp := loadMLP(t)
	stats := inference.NewStats()
	h := inferapi.NewHandler(inferapi.Config{Source: &source{m: &inferapi.Served{Name: "mlp", Version: "1.0.0", Model: m}}, Stats: stats})
	x := []float32{0.5, -1.25, 3, 0.125}
	want, err := mlp.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	in, lg, pr, cl := onnxmodel.MLPInput, onnxmodel.MLPLogits, onnxmodel.MLPProbs, onnxmodel.MLPClass
	jsonIn := fmt.Sprintf(`{"name":%q,"shape":[1,4],"datatype":"FP32","data":[0.5,-1.25,3,0.125]}`, in)
	binIn := fmt.Sprintf(`{"name":%q,"shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}`, in)
	xb := fp32Bytes(x)
	tests := []struct {
		name   string
		header string
		bin    bool // send x after the header
		// binary lists the outputs that must come back in binary; all
		// three outputs come back unless only lists fewer.
		binary []string
		only   []string
	}{
		{name: "binary in, JSON out", header: `{"id":"b1","inputs":[` + binIn + `]}`, bin: true},
		{name: "JSON in, binary out", header: `{"id":"b1","inputs":[` + jsonIn + `],"parameters":{"binary_data_output":true}}`, binary: []string{lg, pr, cl}},
		{name: "binary both", header: `{"id":"b1","inputs":[` + binIn + `],"parameters":{"binary_data_output":true,"other":1}}`, bin: true, binary: []string{lg, pr, cl}},
		{name: "binary in, mixed out", bin: true, binary: []string{lg, cl},
			header: fmt.Sprintf(`{"id":"b1","inputs":[%s],"outputs":[{"name":%q,"parameters":{"binary_data":true}},{"name":%q},{"name":%q,"parameters":{"binary_data":true}}]}`, binIn, lg, pr, cl)},
		{name: "per-output false overrides binary_data_output", bin: true, binary: []string{cl}, only: []string{pr, cl},
			header: fmt.Sprintf(`{"id":"b1","inputs":[%s],"parameters":{"binary_data_output":true},"outputs":[{"name":%q,"parameters":{"binary_data":false}},{"name":%q}]}`, binIn, pr, cl)},
		{name: "JSON in, JSON out, with the header", header: `{"id":"b1","inputs":[` + jsonIn + `]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var body []byte
			var hdr string
			if tc.bin {
				body, hdr = binaryBody(tc.header, xb)
			} else {
				body, hdr = binaryBody(tc.header)
			}
			id, outs := readResponse(t, post(h, "/v2/models/mlp/infer", body, hdr))
			wantOuts := tc.only
			if wantOuts == nil {
				wantOuts = []string{lg, pr, cl}
			}
			if id != "b1" || len(outs) != len(wantOuts) {
				t.Fatalf("id %q, outputs %v; want %v", id, outs, wantOuts)
			}
			for _, name := range wantOuts {
				o, ok := outs[name]
				if !ok {
					t.Fatalf("no output %q", name)
				}
				isBinary := strings.Contains(strings.Join(tc.binary, "\x00")+"\x00", name+"\x00")
				if o.binary != isBinary {
					t.Errorf("output %q binary=%v, want %v", name, o.binary, isBinary)
				}
				var ref []float64
				switch name {
				case lg:
					ref = f64(want.Logits)
				case pr:
					ref = f64(want.Probs)
				case cl:
					if o.dataType != "INT64" {
						t.Errorf("class is %s", o.dataType)
					}
					ref = []float64{float64(want.Class[0])}
				}
				for i, v := range o.data {
					if math.Abs(v-ref[i]) > 1e-5 {
						t.Errorf("%s[%d] = %g, reference %g", name, i, v, ref[i])
					}
				}
			}
		})
	}
	if snap := stats.Snapshot(); len(snap) != 1 || snap[0].Count != uint64(len(tests)) || snap[0].Errors != 0 {
		t.Errorf("stats %+v", snap)
	}
	// A NaN is a value binary data can carry and JSON cannot: it goes in,
	// and comes back out as NaN in binary.
	body, hdr := binaryBody(fmt.Sprintf(`{"inputs":[%s],"outputs":[{"name":%q,"parameters":{"binary_data":true}}]}`, binIn, lg),
		fp32Bytes([]float32{float32(math.NaN()), 1, 2, 3}))
	if _, outs := readResponse(t, post(h, "/v2/models/mlp/infer", body, hdr)); !math.IsNaN(outs[lg].data[0]) {
		t.Errorf("NaN in, logits %v", outs[lg].data)
	}
	// The extension is advertised.
	code, _, raw := do(t, h, "GET", "/v2", "")
	var meta struct {
		Extensions []string `json:"extensions"`
	}
	if err := json.Unmarshal([]byte(raw), &meta); code != 200 || err != nil || len(meta.Extensions) != 1 || meta.Extensions[0] != "binary_tensor_data" {
		t.Errorf("GET /v2: %d %s", code, raw)
	}
}

func f64(x []float32) []float64 {
	out := make([]float64, len(x))
	for i, v := range x {
		out[i] = float64(v)
	}
	return out
}

// TestBinaryLM sends INT64 token ids in binary and gets the logits back in
// binary, compared with the Go reference.
func TestBinaryLM(t *testing.T) {
	cfg := onnxmodel.LMConfig{Vocab: 256, Context: 16, Dim: 32, Layers: 2, Heads: 4, FF: 64}
	h, lm := loadLM(t, cfg)
	tokens := [][]int64{{'h', 'e', 'l', 'l', 'o', ',', ' ', 'w'}, {'e', 'd', 'g', 'e', ' ', 'M', 'L', '!'}}
	want, err := lm.Forward(tokens)
	if err != nil {
		t.Fatal(err)
	}
	flat := append(append([]int64{}, tokens[0]...), tokens[1]...)
	body, hdr := binaryBody(fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[2,8],"datatype":"INT64","parameters":{"binary_data_size":128}}],"parameters":{"binary_data_output":true}}`, onnxmodel.LMInput),
		int64Bytes(flat))
	_, outs := readResponse(t, post(h, "/v2/models/lm/infer", body, hdr))
	if len(outs) != 1 {
		t.Fatalf("outputs %v", outs)
	}
	for _, o := range outs {
		if !o.binary || fmt.Sprint(o.shape) != "[2 8 256]" {
			t.Fatalf("binary %v shape %v", o.binary, o.shape)
		}
		var maxErr float64
		for b := range 2 {
			for p := range 8 {
				for v := range 256 {
					maxErr = max(maxErr, math.Abs(o.data[(b*8+p)*256+v]-float64(want[b][p][v])))
				}
			}
		}
		if maxErr > 1e-4 {
			t.Fatalf("logits differ from the reference by %g", maxErr)
		}
	}
	// A token id the model cannot take is a 400 in binary too.
	body, hdr = binaryBody(fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,2],"datatype":"INT64","parameters":{"binary_data_size":16}}]}`, onnxmodel.LMInput),
		int64Bytes([]int64{1, 300}))
	if rec := post(h, "/v2/models/lm/infer", body, hdr); rec.Code != 400 {
		t.Fatalf("token out of range: %d %s", rec.Code, rec.Body)
	}
}

func loadLM(t *testing.T, cfg onnxmodel.LMConfig) (http.Handler, onnxmodel.LM) {
	t.Helper()
	onnxruntimetest.Init(t)
	lm, err := onnxmodel.NewLM(cfg, 3)
	if err != nil {
		t.Fatal(err)
	}
	b, err := lm.Encode()
	if err != nil {
		t.Fatal(err)
	}
	m, err := (&inference.ONNXRuntime{}).Load(map[string][]byte{"lm.onnx": b}, inference.Meta{Name: "lm", Version: "0.1.0", Runtime: "onnx", Model: "lm.onnx"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return inferapi.NewHandler(inferapi.Config{Source: &source{m: &inferapi.Served{Name: "lm", Version: "0.1.0", Model: m}}}), lm
}

// malformedBinary are binary requests the MLP must refuse with 400, with
// the message saying why; hdr "" sends no Inference-Header-Content-Length,
// "auto" the JSON part's true length.
var malformedBinary = []struct {
	name, header, hdr string
	bin               []byte
	msg               string
}{
	{"no header", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, "", nil, "no Inference-Header-Content-Length"},
	{"no header, with the bytes", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, "", make([]byte, 16), "after the JSON"},
	{"header not a number", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, "abc", make([]byte, 16), "not a byte count"},
	{"header negative", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, "-1", make([]byte, 16), "not a byte count"},
	{"header signed", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, "+97", make([]byte, 16), "not a byte count"},
	{"header empty", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, " ", make([]byte, 16), "not a byte count"},
	{"header huge", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, "99999999999999999999", make([]byte, 16), "not a byte count"},
	{"header past the body", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, "4096", make([]byte, 16), "past the end"},
	{"header short of the JSON", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, "20", make([]byte, 16), "malformed"},
	{"header long into the data", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, "99", make([]byte, 16), "after the JSON"},
	{"size short of the shape", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":12}}]}`, "auto", make([]byte, 12), "needs 16 bytes"},
	{"size past the shape", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":20}}]}`, "auto", make([]byte, 20), "needs 16 bytes"},
	{"size past the body", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, "auto", make([]byte, 8), "past the end"},
	{"bytes left over", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, "auto", make([]byte, 17), "add up to 16"},
	{"bytes but no binary input", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`, "auto", make([]byte, 4), "add up to 0"},
	{"data and size", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4],"parameters":{"binary_data_size":16}}]}`, "auto", make([]byte, 16), "both data and binary_data_size"},
	{"negative size", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":-16}}]}`, "auto", nil, "negative"},
	{"fractional size", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16.0}}]}`, "auto", make([]byte, 16), "integer byte count"},
	{"string size", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":"16"}}]}`, "auto", make([]byte, 16), "integer byte count"},
	{"size overflows", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":99999999999999999999}}]}`, "auto", make([]byte, 16), "integer byte count"},
	{"size twice", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16,"binary_data_size":16}}]}`, "auto", make([]byte, 16), "twice"},
	{"zero size", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":0}}]}`, "auto", nil, "needs 16 bytes"},
	{"INT64 size for FP32", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":32}}]}`, "auto", make([]byte, 32), "needs 16 bytes"},
	{"wrong datatype", `{"inputs":[{"name":"x","shape":[1,2],"datatype":"INT64","parameters":{"binary_data_size":16}}]}`, "auto", make([]byte, 16), "is FP32"},
	{"wrong shape", `{"inputs":[{"name":"x","shape":[1,2,2],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, "auto", make([]byte, 16), "rank"},
	{"no shape", `{"inputs":[{"name":"x","datatype":"FP32","parameters":{"binary_data_size":16}}]}`, "auto", make([]byte, 16), "shape is required"},
	{"unknown input", `{"inputs":[{"name":"z","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, "auto", make([]byte, 16), "unknown input"},
	{"duplicate input", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}},{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, "auto", make([]byte, 32), "twice"},
	{"binary_data_output not a bool", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}],"parameters":{"binary_data_output":1}}`, "auto", make([]byte, 16), "true or false"},
	{"binary_data not a bool", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}],"outputs":[{"name":"logits","parameters":{"binary_data":"yes"}}]}`, "auto", make([]byte, 16), "true or false"},
	{"binary output unknown", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}],"outputs":[{"name":"q","parameters":{"binary_data":true}}]}`, "auto", make([]byte, 16), "unknown output"},
	{"FP32 overflow in JSON with the header", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1e39,2,3,4]}]}`, "auto", nil, "not an FP32"},
}

func TestBinaryBadRequests(t *testing.T) {
	m, _ := loadMLP(t)
	stats := inference.NewStats()
	h := inferapi.NewHandler(inferapi.Config{Source: &source{m: &inferapi.Served{Name: "mlp", Version: "1.0.0", Model: m}}, Stats: stats, MaxBodyBytes: 4096})
	for _, tc := range malformedBinary {
		t.Run(tc.name, func(t *testing.T) {
			header := strings.ReplaceAll(tc.header, `"x"`, strconv.Quote(onnxmodel.MLPInput))
			header = strings.ReplaceAll(header, `"logits"`, strconv.Quote(onnxmodel.MLPLogits))
			body, hdr := binaryBody(header, tc.bin)
			if tc.hdr != "auto" {
				hdr = tc.hdr
			}
			rec := post(h, "/v2/models/mlp/infer", body, hdr)
			var r struct {
				Error string `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil || rec.Code != 400 || !strings.Contains(r.Error, tc.msg) {
				t.Fatalf("got %d %s (%v), want 400 with %q", rec.Code, rec.Body, err, tc.msg)
			}
		})
	}
	t.Run("header given twice", func(t *testing.T) {
		body, hdr := binaryBody(fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, onnxmodel.MLPInput), make([]byte, 16))
		req := httptest.NewRequest("POST", "/v2/models/mlp/infer", bytes.NewReader(body))
		req.Header.Add(headerLen, hdr)
		req.Header.Add(headerLen, hdr)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 400 || !strings.Contains(rec.Body.String(), "2 times") {
			t.Fatalf("got %d %s", rec.Code, rec.Body)
		}
	})
	t.Run("oversized body", func(t *testing.T) {
		body, hdr := binaryBody(fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,2000],"datatype":"FP32","parameters":{"binary_data_size":8000}}]}`, onnxmodel.MLPInput), make([]byte, 8000))
		if rec := post(h, "/v2/models/mlp/infer", body, hdr); rec.Code != 413 {
			t.Fatalf("got %d %s", rec.Code, rec.Body)
		}
	})
	// The model still serves, in binary and in JSON.
	body, hdr := binaryBody(fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, onnxmodel.MLPInput), fp32Bytes([]float32{1, 2, 3, 4}))
	readResponse(t, post(h, "/v2/models/mlp/infer", body, hdr))
	if code, _, raw := do(t, h, "POST", "/v2/models/mlp/infer", inferBody([]float32{1, 2, 3, 4})); code != 200 {
		t.Fatalf("after bad requests: %d %s", code, raw)
	}
	if s := stats.Snapshot(); len(s) != 1 || s[0].Errors == 0 || s[0].Count <= s[0].Errors {
		t.Errorf("stats %+v", s)
	}
}

// FuzzBinaryRequest feeds arbitrary binary-extension requests (the JSON
// part, the bytes after it, and the header: "" none, "auto" the JSON
// part's length, else as given) to the handler: it never answers 500 or
// panics, errors are JSON, and a 200's binary framing is consistent.
func FuzzBinaryRequest(f *testing.F) {
	for _, tc := range malformedBinary {
		f.Add(strings.ReplaceAll(tc.header, `"x"`, strconv.Quote(onnxmodel.MLPInput)), tc.bin, tc.hdr)
	}
	good := fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}],"parameters":{"binary_data_output":true}}`, onnxmodel.MLPInput)
	f.Add(good, fp32Bytes([]float32{1, 2, 3, 4}), "auto")
	f.Add(good, fp32Bytes([]float32{float32(math.Inf(1)), float32(math.NaN()), 3, 4}), "auto")
	f.Add(fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[2,4],"datatype":"FP32","parameters":{"binary_data_size":32}}],"outputs":[{"name":%q,"parameters":{"binary_data":true}}]}`, onnxmodel.MLPInput, onnxmodel.MLPClass),
		make([]byte, 32), "auto")
	m, _ := loadMLP(f)
	h := inferapi.NewHandler(inferapi.Config{Source: &source{m: &inferapi.Served{Name: "mlp", Version: "1", Model: m}}, MaxBodyBytes: 1 << 16})
	f.Fuzz(func(t *testing.T, header string, bin []byte, hdr string) {
		body := append([]byte(header), bin...)
		if hdr == "auto" {
			hdr = strconv.Itoa(len(header))
		}
		req := httptest.NewRequest("POST", "/v2/models/mlp/infer", bytes.NewReader(body))
		if hdr != "" {
			req.Header["Inference-Header-Content-Length"] = []string{hdr}
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch {
		case rec.Code == 500:
			t.Fatalf("500 for %q + %x (header %q): %s", header, bin, hdr, rec.Body)
		case rec.Code != 200:
			if !json.Valid(rec.Body.Bytes()) {
				t.Fatalf("invalid JSON answer %q", rec.Body)
			}
		default:
			readResponse(t, rec)
		}
	})
}
