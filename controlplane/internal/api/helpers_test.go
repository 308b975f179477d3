package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/api"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/api/apitest"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/testpg"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testpg.Stop()
	if fuzzDir != "" {
		os.RemoveAll(fuzzDir)
	}
	os.Exit(code)
}

// clock is a settable clock shared by the API and the store.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().UTC().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// client wraps an Env: it checks each answer's status and validates its
// body against the OpenAPI document, and remembers which routes answered
// successfully.
type client struct {
	t       *testing.T
	env     *apitest.Env
	clk     *clock
	covered map[string]bool // "METHOD pattern" that answered 2xx
}

func newClient(t *testing.T, dsn string) *client {
	t.Helper()
	clk := newClock()
	env := apitest.New(t, apitest.Options{DSN: dsn, Now: clk.Now})
	return &client{t: t, env: env, clk: clk, covered: map[string]bool{}}
}

var (
	docOnce sync.Once
	docMap  map[string]any
	docErr  error
)

// openAPIDoc is the document as a client sees it: JSON decoded into maps.
func openAPIDoc(t *testing.T) map[string]any {
	t.Helper()
	docOnce.Do(func() {
		var b []byte
		if b, docErr = api.OpenAPIJSON(); docErr == nil {
			docErr = json.Unmarshal(b, &docMap)
		}
	})
	if docErr != nil {
		t.Fatalf("OpenAPI document: %v", docErr)
	}
	return docMap
}

// call sends a request, requires status want, validates the body against
// the documented response of (method, pattern, want) and decodes it into
// out if out is not nil. It returns the raw body.
func (c *client) call(method, pattern, path, key string, body any, want int, out any) []byte {
	c.t.Helper()
	status, hdr, raw := c.env.Do(method, path, key, body)
	if status != want {
		c.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, status, want, raw)
	}
	checkResponse(c.t, method, pattern, status, hdr, raw)
	if status < 300 {
		c.covered[method+" "+pattern] = true
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			c.t.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
	return raw
}

// checkResponse validates a response against the OpenAPI document, and
// error bodies against the error contract (code, message, request id
// equal to the X-Request-Id header).
func checkResponse(t *testing.T, method, pattern string, status int, hdr http.Header, raw []byte) {
	t.Helper()
	doc := openAPIDoc(t)
	rid := hdr.Get("X-Request-Id")
	if rid == "" {
		t.Errorf("%s %s: no X-Request-Id", method, pattern)
	}
	op, _ := dig(doc, "paths", pattern, strings.ToLower(method)).(map[string]any)
	if op == nil {
		t.Fatalf("%s %s: not in the OpenAPI document", method, pattern)
	}
	resp, _ := dig(op, "responses", strconv.Itoa(status)).(map[string]any)
	if resp == nil {
		t.Fatalf("%s %s: status %d not documented", method, pattern, status)
	}
	if r, ok := resp["$ref"].(string); ok {
		resp, _ = dig(doc, strings.Split(strings.TrimPrefix(r, "#/"), "/")...).(map[string]any)
	}
	schema, _ := dig(resp, "content", "application/json", "schema").(map[string]any)
	if schema == nil && dig(resp, "content", "application/octet-stream") != nil {
		if ct := hdr.Get("Content-Type"); ct != "application/octet-stream" {
			t.Errorf("%s %s: Content-Type %q, want application/octet-stream", method, pattern, ct)
		}
		return
	}
	if schema == nil {
		if len(raw) != 0 {
			t.Errorf("%s %s: status %d documents no body, got %s", method, pattern, status, raw)
		}
		return
	}
	if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s %s: Content-Type %q", method, pattern, ct)
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s %s: body is not JSON: %v: %s", method, pattern, err, raw)
	}
	if err := validate(doc, schema, v, "$"); err != nil {
		t.Errorf("%s %s %d: body does not match the OpenAPI schema: %v\n%s", method, pattern, status, err, raw)
	}
	if status >= 400 {
		var m map[string]map[string]string
		_ = json.Unmarshal(raw, &m)
		if e := m["error"]; e["code"] == "" || e["message"] == "" || e["request_id"] != rid {
			t.Errorf("%s %s: error body %s: want code, message and request_id %q", method, pattern, raw, rid)
		}
	}
}

func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}

// validate is a small JSON Schema checker for the subset the document
// uses: $ref, type (one or a list), enum, properties, required,
// additionalProperties, items, minimum, maximum.
func validate(doc, schema map[string]any, v any, at string) error {
	if r, ok := schema["$ref"].(string); ok {
		s, _ := dig(doc, strings.Split(strings.TrimPrefix(r, "#/"), "/")...).(map[string]any)
		if s == nil {
			return fmt.Errorf("%s: unresolved $ref %s", at, r)
		}
		return validate(doc, s, v, at)
	}
	if typ, ok := schema["type"]; ok {
		var types []string
		switch tt := typ.(type) {
		case string:
			types = []string{tt}
		case []any:
			for _, x := range tt {
				types = append(types, x.(string))
			}
		}
		got := jsonType(v)
		okType := false
		for _, want := range types {
			if want == got || want == "number" && got == "integer" {
				okType = true
			}
		}
		if !okType {
			return fmt.Errorf("%s: %s, want %v", at, got, types)
		}
	}
	if en, ok := schema["enum"].([]any); ok {
		found := false
		for _, x := range en {
			if x == v {
				found = true
			}
		}
		if !found {
			return fmt.Errorf("%s: %v not in %v", at, v, en)
		}
	}
	if n, ok := v.(float64); ok {
		if min, ok := schema["minimum"].(float64); ok && n < min {
			return fmt.Errorf("%s: %v < minimum %v", at, n, min)
		}
		if max, ok := schema["maximum"].(float64); ok && n > max {
			return fmt.Errorf("%s: %v > maximum %v", at, n, max)
		}
	}
	switch x := v.(type) {
	case map[string]any:
		props, _ := schema["properties"].(map[string]any)
		for _, r := range asSlice(schema["required"]) {
			if _, ok := x[r.(string)]; !ok {
				return fmt.Errorf("%s: required property %q missing", at, r)
			}
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if ps, ok := props[k].(map[string]any); ok {
				if err := validate(doc, ps, x[k], at+"."+k); err != nil {
					return err
				}
				continue
			}
			switch ap := schema["additionalProperties"].(type) {
			case bool:
				if !ap {
					return fmt.Errorf("%s: property %q not in the schema", at, k)
				}
			case map[string]any:
				if err := validate(doc, ap, x[k], at+"."+k); err != nil {
					return err
				}
			}
		}
	case []any:
		if items, ok := schema["items"].(map[string]any); ok {
			for i, e := range x {
				if err := validate(doc, items, e, fmt.Sprintf("%s[%d]", at, i)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func jsonType(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64:
		if x == math.Trunc(x) {
			return "integer"
		}
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// wantError checks an error answer: status, code, and the error contract.
func (c *client) wantError(method, pattern, path, key string, body any, status int, code string) {
	c.t.Helper()
	st, hdr, raw := c.env.Do(method, path, key, body)
	if st != status {
		c.t.Fatalf("%s %s: status %d, want %d; body %s", method, path, st, status, raw)
	}
	checkResponse(c.t, method, pattern, st, hdr, raw)
	if got := errCode(raw); got != code {
		c.t.Fatalf("%s %s: code %q, want %q; body %s", method, path, got, code, raw)
	}
}

func errCode(raw []byte) string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(raw, &e)
	return e.Error.Code
}

// seedDevice creates an enrolled device directly in the store, as the
// core's enrollment would.
func seedDevice(t *testing.T, s *store.Store, tenant, fleetID, ek string, labels map[string]string) store.Device {
	t.Helper()
	d, err := s.CreateDevice(context.Background(), tenant, store.Device{
		FleetID: fleetID, Name: "jetson-" + ek, DeviceType: "jetson-orin", TPMKind: store.TPMHardware,
		EKFingerprint: ek, EKPublic: []byte("ek"), AKPublic: []byte("ak"), Labels: labels,
	})
	if err != nil {
		t.Fatalf("seed device: %v", err)
	}
	return d
}

// backends names the databases the main tests run on.
var backends = []string{"sqlite", "postgres"}

func backendDSN(t *testing.T, backend string) string {
	t.Helper()
	if backend == "postgres" {
		return testpg.Start(t)
	}
	return "" // apitest's default: SQLite in t.TempDir()
}
