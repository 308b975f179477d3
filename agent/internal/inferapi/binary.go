package inferapi

import (
	"encoding/binary"
	"fmt"
	"math"
	"net/http"
	"strconv"

	"github.com/tensorguard/tensorguardflow/agent/internal/inference"
)

// The binary tensor data extension (KServe v2 / Triton "binary_tensor_data"):
// a request's body is its JSON header followed by the raw bytes of the
// inputs that say "parameters": {"binary_data_size": N} instead of "data",
// in the order the inputs are listed; the header
// Inference-Header-Content-Length gives the JSON part's length. Tensors are
// little-endian, row-major, without padding. An output is returned the same
// way when the request asks for it, per output ("binary_data": true) or for
// all ("binary_data_output": true in the request's parameters).

// headerContentLength names the JSON part's length in a binary body.
const headerContentLength = "Inference-Header-Content-Length"

// extensionBinary is the extension's name in GET /v2.
const extensionBinary = "binary_tensor_data"

// Parameters the extension reads; any other parameter is ignored, as
// before.
const (
	paramBinarySize   = "binary_data_size"
	paramBinary       = "binary_data"
	paramBinaryOutput = "binary_data_output"
)

// splitBody splits body into its JSON part and its binary part, as the
// request's Inference-Header-Content-Length says; without that header the
// whole body is JSON.
func splitBody(h http.Header, body []byte) (jsonPart, binPart []byte, err error) {
	vals := h.Values(headerContentLength)
	switch len(vals) {
	case 0:
		return body, nil, nil
	case 1:
	default:
		return nil, nil, fmt.Errorf("%s given %d times", headerContentLength, len(vals))
	}
	n, ok := parseDecimal(vals[0])
	if !ok {
		return nil, nil, fmt.Errorf("%s %q is not a byte count", headerContentLength, vals[0])
	}
	if n > int64(len(body)) {
		return nil, nil, fmt.Errorf("%s %d is past the end of the %d-byte body", headerContentLength, n, len(body))
	}
	return body[:n], body[n:], nil
}

// parseDecimal reads a non-negative decimal integer: digits only, no sign
// or spaces, at most 18 of them (far past any body we accept, and no
// overflow).
func parseDecimal(s string) (int64, bool) {
	if len(s) == 0 || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// binaryPlan is what the request's parameters say about binary data: the
// bytes of each input sent in binary (by index in req.Inputs; nil for a
// JSON input, which an empty slice would not tell apart) and whether each
// requested output goes back in binary.
type binaryPlan struct {
	inputs []*[]byte
	// outputDefault is binary_data_output; outputs is each entry of
	// req.Outputs' binary_data, nil where the output does not say.
	outputDefault bool
	outputs       []*bool
}

// planBinary reads the extension's parameters and hands each binary input
// its slice of bin: the sizes must add up to exactly the bytes after the
// JSON part, an input cannot carry both data and binary_data_size, and
// binary data needs the header that delimits it.
func planBinary(req inferRequest, bin []byte, hasHeader bool) (binaryPlan, error) {
	var plan binaryPlan
	var err error
	if plan.outputDefault, err = boolParam(req.Parameters, paramBinaryOutput); err != nil {
		return plan, fmt.Errorf("request parameters: %v", err)
	}
	plan.outputs = make([]*bool, len(req.Outputs))
	for i, o := range req.Outputs {
		raw, err := findParam(o.Parameters, paramBinary)
		if err == nil && raw == nil {
			continue // the output does not say
		}
		v, err := parseBool(paramBinary, raw, err)
		if err != nil {
			return plan, fmt.Errorf("output %q parameters: %v", o.Name, err)
		}
		plan.outputs[i] = &v
	}
	plan.inputs = make([]*[]byte, len(req.Inputs))
	var off int64
	for i, t := range req.Inputs {
		size, ok, err := intParam(t.Parameters, paramBinarySize)
		if err != nil {
			return plan, fmt.Errorf("input %q parameters: %v", t.Name, err)
		}
		if !ok {
			continue
		}
		if t.Data != nil {
			return plan, fmt.Errorf("input %q has both data and %s: send one", t.Name, paramBinarySize)
		}
		if !hasHeader {
			return plan, fmt.Errorf("input %q has %s but the request has no %s header saying where its JSON part ends", t.Name, paramBinarySize, headerContentLength)
		}
		if size < 0 {
			return plan, fmt.Errorf("input %q: negative %s %d", t.Name, paramBinarySize, size)
		}
		if size > int64(len(bin))-off {
			return plan, fmt.Errorf("input %q: %s %d is past the end of the %d bytes of binary data", t.Name, paramBinarySize, size, len(bin))
		}
		data := bin[off : off+size : off+size]
		plan.inputs[i] = &data
		off += size
	}
	if off != int64(len(bin)) {
		return plan, fmt.Errorf("%d bytes after the JSON part, but the inputs' %s add up to %d", len(bin), paramBinarySize, off)
	}
	return plan, nil
}

// wantBinary reports whether the i-th output the request names (or, with
// i < 0, an output it does not name) goes back in binary.
func (p binaryPlan) wantBinary(i int) bool {
	if i >= 0 && i < len(p.outputs) && p.outputs[i] != nil {
		return *p.outputs[i]
	}
	return p.outputDefault
}

// findParam returns the raw value of key in a parameters object. A
// parameters value that is not an object holds no parameter (it was
// ignored before the extension and still is).
func findParam(params []byte, key string) ([]byte, error) {
	p := &parser{b: params}
	p.ws()
	if p.i >= len(p.b) || p.b[p.i] != '{' {
		return nil, nil
	}
	var found []byte
	err := p.object(func(k string) error {
		v, err := p.value()
		if k == key {
			found = v
		}
		return err
	})
	return found, err
}

func boolParam(params []byte, key string) (bool, error) {
	v, err := findParam(params, key)
	return parseBool(key, v, err)
}

// parseBool reads findParam's answer (v, err) for key as a boolean; an
// absent parameter is false.
func parseBool(key string, v []byte, err error) (bool, error) {
	switch {
	case err != nil:
		return false, err
	case v == nil:
		return false, nil
	case string(v) == "true":
		return true, nil
	case string(v) == "false":
		return false, nil
	}
	return false, fmt.Errorf("%s must be true or false, got %s", key, v)
}

func intParam(params []byte, key string) (int64, bool, error) {
	v, err := findParam(params, key)
	if err != nil || v == nil {
		return 0, false, err
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("%s must be an integer byte count, got %s", key, v)
	}
	return n, true, nil
}

// decodeBinary reads n elements of dt from raw, which must hold exactly
// that many.
func decodeBinary(raw []byte, dt inference.DataType, shape []int64, n int64) (inference.Tensor, error) {
	t := inference.Tensor{Shape: shape}
	size := elemSize(dt)
	if size == 0 {
		return t, fmt.Errorf("datatype %s is not served", dt)
	}
	if n > math.MaxInt64/size || int64(len(raw)) != n*size {
		return t, fmt.Errorf("%s %d, but shape %v of %s needs %d bytes (%d × %d)", paramBinarySize, len(raw), shape, dt, n*size, n, size)
	}
	switch dt {
	case inference.FP32:
		t.Float32 = make([]float32, n)
		for i := range t.Float32 {
			t.Float32[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	case inference.INT64:
		t.Int64 = make([]int64, n)
		for i := range t.Int64 {
			t.Int64[i] = int64(binary.LittleEndian.Uint64(raw[8*i:]))
		}
	}
	return t, nil
}

func elemSize(dt inference.DataType) int64 {
	switch dt {
	case inference.FP32:
		return 4
	case inference.INT64:
		return 8
	}
	return 0
}

// appendBinary writes t's elements little-endian.
func appendBinary(b []byte, t inference.Tensor) []byte {
	for _, v := range t.Float32 {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	for _, v := range t.Int64 {
		b = binary.LittleEndian.AppendUint64(b, uint64(v))
	}
	return b
}

// binarySize is the byte length of t's elements.
func binarySize(t inference.Tensor) int {
	return 4*len(t.Float32) + 8*len(t.Int64)
}
