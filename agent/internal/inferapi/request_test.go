package inferapi

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// strictDecode is what parseRequest must agree with: encoding/json, with
// unknown fields refused and nothing after the object.
func strictDecode(b []byte) (inferRequest, error) {
	var req inferRequest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, err
	}
	if dec.More() {
		return req, errAfter
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err == nil {
		return req, errAfter
	}
	return req, nil
}

var errAfter = jsonError("data after the object")

type jsonError string

func (e jsonError) Error() string { return string(e) }

var requestSeeds = []string{
	`{"id":"r1","inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[0.5,-1.25,3,1e-3]}]}`,
	`{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]],"parameters":{"a":[1,{"b":null}]}}],"outputs":[{"name":"y"},{"name":"z","parameters":{}}],"parameters":{"k":true}}`,
	` { "inputs" : [ ] } `,
	`{"id":"\u00e9t\u00e9 \"q\"","inputs":[]}`,
	`{"inputs":[{"name":"x","shape":[1],"datatype":"INT64","data":[-0]}]}`,
	`{"inputs":[],"inputs":[]}`,
	`{"Inputs":[]}`,
	`{"inputs":[{"name":"x","shape":[1.5],"datatype":"FP32","data":[1]}]}`,
	`{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[01]}]}`,
	`{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1.]}]}`,
	`{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]} x`,
	`{"id":"a` + "\x01" + `"}`,
	`{"id":null}`,
	`[]`,
	``,
}

// stricter are requests encoding/json accepts and parseRequest refuses on
// purpose: a repeated key (which one counts?), a key in another case, and
// null for a string.
var stricter = []string{`"inputs":[],"inputs"`, `"Inputs"`, `null`}

func TestParseRequest(t *testing.T) {
	for _, in := range requestSeeds {
		got, err := parseRequest([]byte(in))
		want, werr := strictDecode([]byte(in))
		if err == nil && (werr != nil || !equalRequests(got, want)) {
			t.Errorf("%q: parsed %+v, encoding/json %+v %v", in, got, want, werr)
		}
		if err != nil && werr == nil && !slices.ContainsFunc(stricter, func(s string) bool { return strings.Contains(in, s) }) {
			t.Errorf("%q: refused (%v), encoding/json accepts it", in, err)
		}
	}
}

// FuzzParseRequest: whatever parseRequest accepts, encoding/json accepts
// and reads the same; it never panics.
func FuzzParseRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := parseRequest([]byte(in))
		if err != nil {
			return
		}
		want, werr := strictDecode([]byte(in))
		if werr != nil {
			t.Fatalf("%q: parseRequest accepted what encoding/json refuses (%v)", in, werr)
		}
		if !equalRequests(got, want) {
			t.Fatalf("%q: parseRequest %+v, encoding/json %+v", in, got, want)
		}
	})
}

func equalRequests(a, b inferRequest) bool {
	if a.ID != b.ID || len(a.Inputs) != len(b.Inputs) || len(a.Outputs) != len(b.Outputs) || !rawEqual(a.Parameters, b.Parameters) {
		return false
	}
	for i := range a.Inputs {
		x, y := a.Inputs[i], b.Inputs[i]
		if x.Name != y.Name || x.DataType != y.DataType || len(x.Shape) != len(y.Shape) || !rawEqual(x.Data, y.Data) || !rawEqual(x.Parameters, y.Parameters) {
			return false
		}
		for j := range x.Shape {
			if x.Shape[j] != y.Shape[j] {
				return false
			}
		}
	}
	for i := range a.Outputs {
		if a.Outputs[i].Name != b.Outputs[i].Name || !rawEqual(a.Outputs[i].Parameters, b.Outputs[i].Parameters) {
			return false
		}
	}
	return true
}

// rawEqual compares raw JSON values as encoding/json would keep them
// (RawMessage is the exact bytes, without surrounding whitespace).
func rawEqual(a, b json.RawMessage) bool {
	return bytes.Equal(bytes.TrimSpace(a), bytes.TrimSpace(b))
}
