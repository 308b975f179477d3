package api_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/api"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/api/apitest"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

func doWithRequestID(t *testing.T, c *client, method, path, key, body, rid string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, c.env.Server.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if rid != "" {
		req.Header.Set("X-Request-Id", rid)
	}
	resp, err := c.env.Server.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, raw
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	c := newClient(t, "")
	for _, tc := range []struct {
		in   string
		keep bool
	}{
		{"abc-123", true},
		{"A.b_C-9", true},
		{strings.Repeat("x", 64), true},
		{strings.Repeat("x", 65), false},
		{"has space", false},
		{"tab\there", false},
		{"héllo", false},
		{"semi;colon", false},
		{"", false},
	} {
		st, hdr, raw := doWithRequestID(t, c, "GET", "/api/v1/fleets/nope", c.env.AdminKey, "", tc.in)
		got := hdr.Get("X-Request-Id")
		if st != 404 || !strings.Contains(string(raw), `"request_id":"`+got+`"`) {
			t.Errorf("%q: %d %s (header %q)", tc.in, st, raw, got)
		}
		switch {
		case tc.keep && got != tc.in:
			t.Errorf("sane id %q replaced by %q", tc.in, got)
		case !tc.keep && (got == tc.in || !strings.HasPrefix(got, "req-") || len(got) > 64):
			t.Errorf("id %q: got %q, want a generated req-…", tc.in, got)
		}
	}
	// An outer WithRequestID (the core's) is kept, not replaced.
	inner := api.WithRequestID(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		api.WriteError(w, r, 418, "TEAPOT", "short and stout")
	}))
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/x", nil)
	req.Header.Set("X-Request-Id", "outer-1")
	api.WithRequestID(inner).ServeHTTP(rec, req)
	if rec.Header().Get("X-Request-Id") != "outer-1" || !strings.Contains(rec.Body.String(), `"request_id":"outer-1"`) {
		t.Errorf("nested WithRequestID: %v %s", rec.Header(), rec.Body)
	}
}

func TestUnknownRouteAndMethod(t *testing.T) {
	t.Parallel()
	c := newClient(t, "")
	for _, tc := range []struct {
		method, path string
		status       int
		code, allow  string
	}{
		{"GET", "/api/v1/nothing", 404, "NOT_FOUND", ""},
		{"GET", "/api/v1/fleets/a/b/c", 404, "NOT_FOUND", ""},
		{"PUT", "/api/v1/fleets", 405, "METHOD_NOT_ALLOWED", "GET, HEAD, POST"},
		{"DELETE", "/api/v1/audit", 405, "METHOD_NOT_ALLOWED", "GET, HEAD"},
		{"POST", "/api/v1/devices/dev-x", 405, "METHOD_NOT_ALLOWED", "DELETE, GET, HEAD, PATCH"},
		{"GET", "/api/v1/enroll", 405, "METHOD_NOT_ALLOWED", "POST"},
		// The core's route reaching this handler means the core is not mounted.
		{"POST", "/api/v1/enroll", 404, "NOT_FOUND", ""},
	} {
		st, hdr, raw := doWithRequestID(t, c, tc.method, tc.path, "", "", "")
		if st != tc.status || errCode(raw) != tc.code || hdr.Get("Allow") != tc.allow || hdr.Get("X-Request-Id") == "" ||
			!strings.HasPrefix(hdr.Get("Content-Type"), "application/json") {
			t.Errorf("%s %s: %d %s Allow %q, want %d %s Allow %q", tc.method, tc.path, st, raw, hdr.Get("Allow"), tc.status, tc.code, tc.allow)
		}
	}
}

// panicCA panics where the API asks for the tenant CA.
type panicCA struct{ *apitest.CA }

func (panicCA) TenantCAPEM(context.Context, string) ([]byte, error) { panic("boom: secret internals") }

// failingCA fails where the API asks for the tenant CA.
type failingCA struct{ *apitest.CA }

func (failingCA) TenantCAPEM(context.Context, string) ([]byte, error) {
	return nil, errors.New("hsm offline at 10.0.0.7")
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestInternalErrorsAndLog: a panic and an unexpected error are 500
// INTERNAL with a generic message, their details go to the log with the
// request id, and the log never holds the API key.
func TestInternalErrorsAndLog(t *testing.T) {
	t.Parallel()
	st, err := store.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "cp.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	if _, err := st.CreateTenant(ctx, store.Tenant{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	op, err := st.CreateOperator(ctx, "acme", store.Operator{Name: "admin", Role: store.RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := st.CreateAPIKey(ctx, "acme", store.APIKey{OperatorID: op.ID, Role: store.RoleAdmin, Name: "k"})
	if err != nil {
		t.Fatal(err)
	}
	base, err := apitest.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	for _, ca := range []api.CA{panicCA{base}, failingCA{base}} {
		var logs syncBuffer
		srv := httptest.NewServer(api.New(api.Deps{Store: st, CA: ca, Logger: slog.New(slog.NewJSONHandler(&logs, nil))}))
		req, _ := http.NewRequest("GET", srv.URL+"/api/v1/ca", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("X-Request-Id", "rid-500")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		srv.Close()
		checkResponse(t, "GET", "/api/v1/ca", resp.StatusCode, resp.Header, raw)
		if resp.StatusCode != 500 || errCode(raw) != "INTERNAL" || strings.Contains(string(raw), "boom") || strings.Contains(string(raw), "10.0.0.7") {
			t.Errorf("%T: %d %s, want a generic 500 INTERNAL", ca, resp.StatusCode, raw)
		}
		l := logs.String()
		if !strings.Contains(l, "rid-500") || !(strings.Contains(l, "boom") || strings.Contains(l, "10.0.0.7")) {
			t.Errorf("%T: log lacks the request id or the cause:\n%s", ca, l)
		}
		if !strings.Contains(l, `"msg":"http request"`) || !strings.Contains(l, `"status":500`) {
			t.Errorf("%T: no access log line:\n%s", ca, l)
		}
		secret := key[strings.LastIndex(key, "_")+1:]
		if strings.Contains(l, secret) || strings.Contains(l, "Bearer") {
			t.Errorf("%T: the log holds the API key:\n%s", ca, l)
		}
	}
}

func TestMQTTCredentialsCSR(t *testing.T) {
	t.Parallel()
	c := newClient(t, "")
	viewer := c.env.Key("acme", "vera", store.RoleViewer)
	edPub, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_ = edPub
	var creds api.MQTTCredentials
	c.call("POST", "/api/v1/mqtt/credentials", "/api/v1/mqtt/credentials", viewer, api.MQTTCredentialsRequest{CSR: csrPEM(t, edKey)}, 200, &creds)
	checkOperatorCert(t, c, creds)

	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	good := csrPEM(t, p256Key(t))
	block, _ := pem.Decode([]byte(good))
	tampered := bytes.Clone(block.Bytes)
	tampered[len(tampered)-5] ^= 0xff // inside the signature
	for name, csr := range map[string]string{
		"P-384":           csrPEM(t, p384),
		"RSA":             csrPEM(t, rsaKey),
		"bad signature":   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered})),
		"not PEM":         "hello",
		"certificate":     strings.ReplaceAll(good, "CERTIFICATE REQUEST", "CERTIFICATE"),
		"trailing":        good + "junk",
		"garbage in PEM":  string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte("nope")})),
		"empty":           "",
		"two CSRs in one": good + good,
	} {
		st, hdr, raw := c.env.Do("POST", "/api/v1/mqtt/credentials", viewer, api.MQTTCredentialsRequest{CSR: csr})
		if st != 400 || errCode(raw) != "BAD_REQUEST" || !strings.Contains(string(raw), "csr") {
			t.Errorf("%s: %d %s, want 400 naming the csr", name, st, raw)
			continue
		}
		checkResponse(t, "POST", "/api/v1/mqtt/credentials", st, hdr, raw)
	}
	if n := len(c.env.CA.Issued); n != 1 {
		t.Errorf("CA issued %d certificates, want 1", n)
	}
}
