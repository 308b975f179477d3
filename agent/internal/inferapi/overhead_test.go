package inferapi_test

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/agent/internal/inferapi"
	"github.com/tensorguard/tensorguardflow/agent/internal/inference"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
)

// nopModel answers at once.
type nopModel struct{}

func (nopModel) Backend() string { return "nop" }
func (nopModel) Inputs() []inference.TensorInfo {
	return []inference.TensorInfo{{Name: "x", DataType: inference.FP32, Shape: []int64{-1, 784}}}
}
func (nopModel) Outputs() []inference.TensorInfo {
	return []inference.TensorInfo{{Name: "logits", DataType: inference.FP32, Shape: []int64{-1, 10}}}
}
func (nopModel) Close() error { return nil }
func (nopModel) Infer(map[string]inference.Tensor) (map[string]inference.Tensor, error) {
	return map[string]inference.Tensor{"logits": {Shape: []int64{1, 10}, Float32: make([]float32, 10)}}, nil
}

// BenchmarkHandlerOverhead is the API's own cost per request (decode a
// 784-value FP32 input, validate, record, encode) around a model that does
// nothing, without a network.
func BenchmarkHandlerOverhead(b *testing.B) {
	h := inferapi.NewHandler(inferapi.Config{Source: &source{m: &inferapi.Served{Name: "m", Version: "1", Model: nopModel{}}}, Stats: inference.NewStats()})
	body := requestBody(onnxmodel.RandomInputs(784, 1))
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/v2/models/m/infer", strings.NewReader(body)))
		if rec.Code != 200 {
			b.Fatal(rec.Body.String())
		}
	}
}

// BenchmarkHandlerOverheadBinary is BenchmarkHandlerOverhead with the
// binary tensor data extension in and out.
func BenchmarkHandlerOverheadBinary(b *testing.B) {
	h := inferapi.NewHandler(inferapi.Config{Source: &source{m: &inferapi.Served{Name: "m", Version: "1", Model: nopModel{}}}, Stats: inference.NewStats()})
	body, hdr := binaryRequestBody(onnxmodel.RandomInputs(784, 1))
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/v2/models/m/infer", bytes.NewReader(body))
		req.Header.Set("Inference-Header-Content-Length", hdr)
		h.ServeHTTP(rec, req)
		if rec.Code != 200 || rec.Header().Get("Inference-Header-Content-Length") == "" {
			b.Fatal(rec.Body.String())
		}
	}
}
