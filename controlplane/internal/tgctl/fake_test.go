package tgctl

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// fakeServer answers a few routes of docs/api.md with fixed objects, for
// golden output and precedence tests. It records every request's
// Authorization header and path. Tests of behaviour run against the real
// API (apitest, controlplanetest) instead.
type fakeServer struct {
	*httptest.Server
	mu    sync.Mutex
	auths []string
	paths []string
}

// fixtures are the objects the fake serves, as the server would encode
// them.
var fixtures = map[string]string{
	"GET /api/v1/fleets": `[
 {"id":"flt-aaaaaaaaaaaaaaaaaaaa","name":"jetsons","policy":{"allow_no_tpm":false,"allow_simulated_tpm":false,"cert_ttl":"24h","attestation":{"interval":"","pcrs":[0,1,2,3,4,5,6,7],"allowed_kinds":["hardware"],"revoke_on_untrusted":false}},"created_at":"2026-01-02T03:04:05Z"},
 {"id":"flt-bbbbbbbbbbbbbbbbbbbb","name":"lab-boxes","policy":{"allow_no_tpm":true,"allow_simulated_tpm":true,"cert_ttl":"1h30m","attestation":{"interval":"10s","pcrs":[0,2,4,7,16],"rules":{"7":{"mode":"golden","allow":["abababababababababababababababababababababababababababababababab"]}},"allowed_kinds":["hardware","swtpm","simulated"],"revoke_on_untrusted":true}},"created_at":"2026-01-03T00:00:00Z"}]`,
	"GET /api/v1/devices": `[
 {"id":"dev-aaaaaaaaaaaaaaaaaaaa","fleet_id":"flt-aaaaaaaaaaaaaaaaaaaa","name":"jetson-01","labels":{"site":"berlin","rack":"r7"},"device_type":"jetson-orin","tpm_kind":"hardware","ek_fingerprint":"sha256:ab","cert_serial":"1f","cert_not_after":"2026-01-03T03:04:05Z","status":"enrolled","online":true,"quarantined":true,"kem_key":true,"last_seen_at":"2026-01-02T10:00:00Z","created_at":"2026-01-02T03:04:05Z"},
 {"id":"dev-bbbbbbbbbbbbbbbbbbbb","fleet_id":"flt-bbbbbbbbbbbbbbbbbbbb","name":"box\tone","labels":{},"device_type":"x86","tpm_kind":"none","ek_fingerprint":"","cert_serial":"20","cert_not_after":null,"status":"revoked","online":false,"quarantined":false,"kem_key":false,"last_seen_at":null,"created_at":"2026-01-02T03:04:06Z"}]`,
	"GET /api/v1/fleets/jetsons/enrollment-tokens": `[
 {"id":"tok-aaaaaaaaaaaaaaaaaaaa","fleet_id":"flt-aaaaaaaaaaaaaaaaaaaa","created_by":"op-aaaaaaaaaaaaaaaaaaaa","created_at":"2026-01-02T03:04:05Z","expires_at":"2026-01-02T04:04:05Z","used_at":"2026-01-02T03:10:00Z","used_by_device":"dev-aaaaaaaaaaaaaaaaaaaa","state":"used"},
 {"id":"tok-bbbbbbbbbbbbbbbbbbbb","fleet_id":"flt-aaaaaaaaaaaaaaaaaaaa","created_by":"op-aaaaaaaaaaaaaaaaaaaa","created_at":"2026-01-02T05:00:00Z","expires_at":"2026-01-02T06:00:00Z","used_at":null,"used_by_device":null,"state":"active"}]`,
	"POST /api/v1/fleets/jetsons/enrollment-tokens": `{"id":"tok-cccccccccccccccccccc","token":"tgt_tok-cccccccccccccccccccc_s3cr3t","fleet_id":"flt-aaaaaaaaaaaaaaaaaaaa","expires_at":"2026-01-02T04:04:05Z","ca_hash":"sha256:0011223344556677889900112233445566778899001122334455667788990011"}`,
	"GET /api/v1/whoami":                            `{"tenant":"acme","operator_id":"op-aaaaaaaaaaaaaaaaaaaa","key_id":"KEYID","role":"admin"}`,
	"GET /api/v1/fleets/missing":                    `!404 {"error":{"code":"NOT_FOUND","message":"fleet missing not found","request_id":"req-42"}}`,
	"GET /api/v1/fleets/proxy":                      `!502 <html><body>502 Bad Gateway</body></html>`,
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	f := &fakeServer{}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *fakeServer) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.auths = append(f.auths, r.Header.Get("Authorization"))
	f.paths = append(f.paths, r.Method+" "+r.URL.Path)
	f.mu.Unlock()
	body, ok := fixtures[r.Method+" "+r.URL.Path]
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"error":{"code":"NOT_FOUND","message":"no fixture","request_id":"req-0"}}`))
		return
	}
	status := http.StatusOK
	ct := "application/json"
	if strings.HasPrefix(body, "!404 ") {
		status, body = http.StatusNotFound, body[5:]
	} else if strings.HasPrefix(body, "!502 ") {
		status, body, ct = http.StatusBadGateway, body[5:], "text/html"
	}
	if r.URL.Path == "/api/v1/whoami" {
		// key_id tells the test which key arrived, without showing it.
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		id, _ := json.Marshal("key-of-" + strings.ToUpper(key))
		body = strings.Replace(body, `"KEYID"`, string(id), 1)
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("X-Request-Id", "req-fake")
	w.WriteHeader(status)
	w.Write([]byte(body))
}

// last returns the Authorization header and path of the last request.
func (f *fakeServer) last() (auth, path string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.auths) == 0 {
		return "", ""
	}
	return f.auths[len(f.auths)-1], f.paths[len(f.paths)-1]
}

func (f *fakeServer) requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.paths)
}
