package inferapi_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/agent/internal/inferapi"
	"github.com/tensorguard/tensorguardflow/agent/internal/inference"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
)

// serveNop serves a model that does nothing over a Unix socket until b
// ends and returns a client of it.
func serveNop(b *testing.B) *http.Client {
	b.Helper()
	dir, err := os.MkdirTemp("", "tgrtt") // short: a socket path has 108 bytes
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	l, err := inferapi.ListenUnix(sock, "")
	if err != nil {
		b.Fatal(err)
	}
	h := inferapi.NewHandler(inferapi.Config{Source: &source{m: &inferapi.Served{Name: "m", Version: "1", Model: nopModel{}}}, Stats: inference.NewStats()})
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	go inferapi.Serve(ctx, h, time.Second, l)
	return unixClient(sock)
}

// BenchmarkRoundTripNop is one request over the Unix socket (HTTP, the
// 784-value JSON input, the handler) to a model that does nothing: the
// API's whole fixed cost, which BenchmarkInferenceAPI adds to a model's.
func BenchmarkRoundTripNop(b *testing.B) {
	c := serveNop(b)
	body := requestBody(onnxmodel.RandomInputs(784, 1))
	for b.Loop() {
		resp, err := c.Post("http://a/v2/models/m/infer", "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// BenchmarkRoundTripNopBinary is BenchmarkRoundTripNop with the binary
// tensor data extension in and out.
func BenchmarkRoundTripNopBinary(b *testing.B) {
	c := serveNop(b)
	body, hdr := binaryRequestBody(onnxmodel.RandomInputs(784, 1))
	for b.Loop() {
		req, err := http.NewRequest("POST", "http://a/v2/models/m/infer", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		req.Header.Set("Inference-Header-Content-Length", hdr)
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
