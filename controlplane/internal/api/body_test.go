package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/api"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/api/apitest"
)

// TestMalformedBodies sends every kind of bad body to every route of this
// package that takes one (as the OpenAPI document says) and wants the
// right 4xx with the JSON error shape and a request id.
func TestMalformedBodies(t *testing.T) {
	t.Parallel()
	c := newClient(t, "")
	o := makeObjects(t, c)
	doc := openAPIDoc(t)
	admin := c.env.AdminKey

	routes := 0
	for _, rt := range api.Routes() {
		op, _ := dig(doc, "paths", rt.Path, strings.ToLower(rt.Method)).(map[string]any)
		rb, _ := op["requestBody"].(map[string]any)
		if rb == nil || dig(rb, "content", "application/json") == nil {
			continue // none, or a file (POST /api/v1/packages: its own tests)
		}
		routes++
		required, _ := rb["required"].(bool)
		schemaRef, _ := dig(rb, "content", "application/json", "schema", "$ref").(string)
		schema, _ := dig(doc, strings.Split(strings.TrimPrefix(schemaRef, "#/"), "/")...).(map[string]any)
		props, _ := schema["properties"].(map[string]any)
		valid, err := json.Marshal(validBody(t, rt.Method, rt.Path))
		if err != nil {
			t.Fatal(err)
		}
		path := o.path(rt.Path)

		type tc struct {
			name, contentType string
			body              []byte
			chunked           bool
			status            int
			code, mention     string
		}
		cases := []tc{
			{"not JSON", "application/json", []byte("hello"), false, 400, "BAD_REQUEST", ""},
			{"truncated", "application/json", valid[:len(valid)-1], false, 400, "BAD_REQUEST", ""},
			{"array", "application/json", []byte("[]"), false, 400, "BAD_REQUEST", ""},
			{"null", "application/json", []byte("null"), false, 400, "BAD_REQUEST", ""},
			{"unknown field", "application/json", []byte(`{"bogus_field":1}`), false, 400, "BAD_REQUEST", "bogus_field"},
			{"trailing data", "application/json", append(append([]byte{}, valid...), []byte(` {"x":1}`)...), false, 400, "BAD_REQUEST", "trailing"},
			{"trailing garbage", "application/json", append(append([]byte{}, valid...), 'x'), false, 400, "BAD_REQUEST", ""},
			{"huge", "application/json", hugeBody(), false, 413, "PAYLOAD_TOO_LARGE", ""},
			{"huge chunked", "application/json", hugeBody(), true, 413, "PAYLOAD_TOO_LARGE", ""},
			{"text/plain", "text/plain", valid, false, 415, "UNSUPPORTED_MEDIA_TYPE", ""},
			{"no content type", "", valid, false, 415, "UNSUPPORTED_MEDIA_TYPE", ""},
			{"latin-1", "application/json; charset=iso-8859-1", valid, false, 415, "UNSUPPORTED_MEDIA_TYPE", ""},
		}
		if required {
			cases = append(cases, tc{"empty", "application/json", nil, false, 400, "BAD_REQUEST", ""})
		}
		names := make([]string, 0, len(props))
		for k := range props {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, field := range names {
			wrong := `"not-this-type"`
			if typ, _ := props[field].(map[string]any)["type"].(string); typ == "string" {
				wrong = `12345`
			}
			cases = append(cases, tc{"wrong type " + field, "application/json", []byte(`{"` + field + `":` + wrong + `}`), false, 400, "BAD_REQUEST", field})
		}
		for _, k := range cases {
			st, hdr, raw := rawDo(t, c, rt.Method, path, admin, k.contentType, k.body, k.chunked)
			if st != k.status || errCode(raw) != k.code {
				t.Errorf("%s %s, %s: %d %s, want %d %s", rt.Method, rt.Path, k.name, st, raw, k.status, k.code)
				continue
			}
			checkResponse(t, rt.Method, rt.Path, st, hdr, raw)
			if k.mention != "" && !strings.Contains(string(raw), k.mention) {
				t.Errorf("%s %s, %s: message does not name %q: %s", rt.Method, rt.Path, k.name, k.mention, raw)
			}
		}
	}
	if routes != 15 {
		t.Errorf("%d routes take a JSON body, want 15", routes)
	}
	// A nested field is named by its path.
	st, _, raw := rawDo(t, c, "POST", "/api/v1/fleets", admin, "application/json", []byte(`{"name":"n","policy":{"cert_ttl":5}}`), false)
	if st != 400 || !strings.Contains(string(raw), "policy.cert_ttl") {
		t.Errorf("nested wrong type: %d %s", st, raw)
	}
	// Optional bodies may be empty, without a Content-Type.
	st, _, raw = rawDo(t, c, "POST", "/api/v1/fleets/edge/enrollment-tokens", admin, "", nil, false)
	if st != 201 {
		t.Errorf("token create with no body: %d %s", st, raw)
	}
}

func hugeBody() []byte {
	return append(append([]byte(`{"name":"`), bytes.Repeat([]byte("a"), api.MaxBodyBytes+10)...), []byte(`"}`)...)
}

// rawDo sends a request with exactly this Content-Type (none if empty)
// and body; chunked hides the length from the server.
func rawDo(t *testing.T, c *client, method, path, key, contentType string, body []byte, chunked bool) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader = bytes.NewReader(body)
	if chunked {
		rd = io.MultiReader(bytes.NewReader(body)) // not a *bytes.Reader: no ContentLength
	}
	req, err := http.NewRequest(method, c.env.Server.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := c.env.Server.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, raw
}

// FuzzRequestBody: no body sent to a route that takes one makes the
// server fail (5xx) or answer an error outside the contract.
func FuzzRequestBody(f *testing.F) {
	for _, s := range []string{`{"name":"edge"}`, `{"name":"x","policy":{"cert_ttl":"90d","allow_no_tpm":true}}`,
		`{"policy":{"cert_ttl":5}}`, `[]`, `null`, `{"name":"a"} {}`, `{"labels":{"a":"b"}}`, `{"csr":"-----BEGIN CERTIFICATE REQUEST-----\n"}`,
		`{"role":"admin","name":"n","expires_in":"1d"}`, "{\"name\":\"\xff\"}", `{"ttl":"7d"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		c := fuzzClient(t)
		for _, target := range []struct{ method, pattern, path string }{
			{"POST", "/api/v1/fleets", "/api/v1/fleets"},
			{"PATCH", "/api/v1/fleets/{fleet}", "/api/v1/fleets/edge"},
			{"POST", "/api/v1/api-keys", "/api/v1/api-keys"},
			{"PATCH", "/api/v1/devices/{id}", "/api/v1/devices/dev-aaaaaaaaaaaaaaaaaaaa"},
			{"POST", "/api/v1/fleets/{fleet}/enrollment-tokens", "/api/v1/fleets/edge/enrollment-tokens"},
			{"POST", "/api/v1/mqtt/credentials", "/api/v1/mqtt/credentials"},
		} {
			st, hdr, raw := rawDo(t, c, target.method, target.path, c.env.AdminKey, "application/json", []byte(body), false)
			if st >= 500 {
				t.Fatalf("%s %s %q: %d %s", target.method, target.path, body, st, raw)
			}
			checkResponse(t, target.method, target.pattern, st, hdr, raw)
		}
	})
}

var (
	fuzzOnce sync.Once
	fuzzC    *client
	fuzzDir  string // removed by TestMain
)

// fuzzClient is one Env for a whole fuzz run (per worker process), in its
// own temp dir that outlives the iterations.
func fuzzClient(t *testing.T) *client {
	fuzzOnce.Do(func() {
		dir, err := os.MkdirTemp("", "apifuzz")
		if err != nil {
			t.Fatal(err)
		}
		fuzzDir = dir
		ft := &fuzzTB{TB: t, dir: dir}
		clk := newClock()
		env := apitest.New(ft, apitest.Options{DSN: "sqlite://" + filepath.Join(dir, "cp.db"), Now: clk.Now})
		fuzzC = &client{t: nil, env: env, clk: clk, covered: map[string]bool{}}
		if st, _, raw := env.Do("POST", "/api/v1/fleets", env.AdminKey, api.FleetCreate{Name: "edge"}); st != 201 {
			t.Fatalf("fuzz fixture: %d %s", st, raw)
		}
	})
	fuzzC.t = t
	fuzzC.env.T = t
	return fuzzC
}

// fuzzTB keeps the Env of a fuzz run alive across iterations: its cleanups
// never run (the process ends) and its temp dir is fixed.
type fuzzTB struct {
	testing.TB
	dir string
}

func (f *fuzzTB) Cleanup(func())      {}
func (f *fuzzTB) TempDir() string     { return f.dir }
func (f *fuzzTB) Log(args ...any)     {}
func (f *fuzzTB) Logf(string, ...any) {}
