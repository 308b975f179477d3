package integration

import (
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
)

// openAPIOp is what the tests need of one operation of the served OpenAPI
// document.
type openAPIOp struct {
	method, path string
	role         string // x-required-role: viewer, operator, admin; "" for token, session and device routes
	mtls         bool   // security: deviceCert
	body         bool   // has a requestBody
}

// openAPIOps fetches GET /api/v1/openapi.json from the process and lists
// its operations in a stable order.
func openAPIOps(t *testing.T, cp *cpProc) []openAPIOp {
	t.Helper()
	resp, err := cp.httpClient(nil).Get(cp.baseURL + "/api/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("openapi.json: %s %v", resp.Status, err)
	}
	var ops []openAPIOp
	for path, item := range doc.Paths {
		for method, raw := range item {
			switch method {
			case "get", "put", "post", "delete", "patch":
			default:
				continue
			}
			var o struct {
				Role        string                `json:"x-required-role"`
				Security    []map[string][]string `json:"security"`
				RequestBody json.RawMessage       `json:"requestBody"`
			}
			if err := json.Unmarshal(raw, &o); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			// A JSON body (POST /api/v1/packages takes the file itself).
			var rb struct {
				Content map[string]json.RawMessage `json:"content"`
			}
			_ = json.Unmarshal(o.RequestBody, &rb)
			_, jsonBody := rb.Content["application/json"]
			op := openAPIOp{method: strings.ToUpper(method), path: path, role: o.Role, body: jsonBody}
			for _, s := range o.Security {
				if _, ok := s["deviceCert"]; ok {
					op.mtls = true
				}
			}
			ops = append(ops, op)
		}
	}
	sort.Slice(ops, func(i, j int) bool {
		if ops[i].path != ops[j].path {
			return ops[i].path < ops[j].path
		}
		return ops[i].method < ops[j].method
	})
	return ops
}

// apiErrorBody is the error shape of docs/api.md.
type apiErrorBody struct {
	Error struct {
		Code      string `json:"code"`
		Message   string `json:"message"`
		RequestID string `json:"request_id"`
	} `json:"error"`
}

// call sends one request and decodes an error body, checking that its
// request id is the X-Request-Id header.
func call(t *testing.T, c *http.Client, method, url, bearer, body string) (int, apiErrorBody, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var e apiErrorBody
	if resp.StatusCode >= 400 {
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Errorf("%s %s: %s with a body that is not the JSON error shape: %q", method, url, resp.Status, raw)
		} else if e.Error.RequestID == "" || e.Error.RequestID != resp.Header.Get("X-Request-Id") {
			t.Errorf("%s %s: request_id %q, X-Request-Id %q", method, url, e.Error.RequestID, resp.Header.Get("X-Request-Id"))
		}
	}
	return resp.StatusCode, e, string(raw)
}

// TestViewerCannotMutate walks the OpenAPI document the control-plane
// process serves: a viewer API key gets 403 FORBIDDEN on every operation
// that needs the operator or admin role, aimed at objects that exist; and
// malformed JSON to every operation with a request body gets 400
// BAD_REQUEST, with the credential each route needs so the body is really
// read. Neither changes anything: the audit chain stays as it was.
func TestViewerCannotMutate(t *testing.T) {
	cp := startControlPlane(t, cpOptions{})
	var fleet client.Fleet
	cp.tgctlJSON(&fleet, "fleet", "create", "lab", "--allow-no-tpm")
	token, _ := cp.token("lab")
	dev, devCert := enrollNoTPM(t, cp, token)
	_, tokenID := cp.token("lab") // stays unused
	var viewer client.CreatedAPIKey
	cp.tgctlJSON(&viewer, "apikey", "create", "--name", "viewer", "--role", "viewer")
	var who client.Whoami
	cp.tgctlJSON(&who, "whoami")
	// A package and a rollout of it, for their routes.
	pkgID := pushTestPackage(t, cp, "ml", "viewer-model", "1.0.0")
	var rollout client.Rollout
	cp.tgctlJSON(&rollout, "rollout", "create", "--package", pkgID, "--fleet", "lab")
	// Every path parameter names an object that exists, so a missing role
	// check would show as a change, not hide behind a 404.
	ids := map[string]string{
		"/api/v1/operators/{id}":         who.OperatorID,
		"/api/v1/api-keys/{id}":          viewer.ID,
		"/api/v1/enrollment-tokens/{id}": tokenID,
		"/api/v1/devices/{id}":           dev,
		"/api/v1/devices/{id}/revoke":    dev,
		"/api/v1/devices/{id}/attest":    dev,
	}
	for _, action := range []string{"", "/pause", "/resume", "/abort", "/rollback"} {
		ids["/api/v1/rollouts/{id}"+action] = rollout.ID
	}
	resolve := func(path string) string {
		if strings.Contains(path, "{fleet}") {
			return strings.ReplaceAll(path, "{fleet}", fleet.Name)
		}
		if strings.Contains(path, "{package}") || strings.Contains(path, "{publisher}") {
			return strings.NewReplacer("{package}", pkgID, "{publisher}", "ml").Replace(path)
		}
		if id, ok := ids[path]; ok {
			return strings.ReplaceAll(path, "{id}", id)
		}
		if strings.Contains(path, "{") {
			t.Fatalf("no object for the parameters of %s: add one", path)
		}
		return path
	}
	auditHead := func() uint64 {
		var page client.AuditPage
		cp.tgctlJSON(&page, "audit", "list", "--limit", "1000")
		if len(page.Entries) == 0 {
			t.Fatal("empty audit chain")
		}
		return page.Entries[len(page.Entries)-1].Seq
	}
	head := auditHead()
	ops := openAPIOps(t, cp)
	api := cp.httpClient(nil)

	// The viewer key, through tgctl as an operator would use it …
	if out, errOut, code := cp.tgctlAs(viewer.Key, "fleet", "create", "sneaky"); code != 1 || !strings.Contains(errOut, "FORBIDDEN") {
		t.Errorf("tgctl fleet create as viewer: exit %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := cp.tgctlAs(viewer.Key, "device", "revoke", dev); code != 1 || !strings.Contains(errOut, "FORBIDDEN") {
		t.Errorf("tgctl device revoke as viewer: exit %d\n%s%s", code, out, errOut)
	}
	// … and on every mutating operation of the document.
	var checked []string
	for _, op := range ops {
		if op.method == http.MethodGet || (op.role != "operator" && op.role != "admin") {
			// GETs are a viewer's; the token, session and device routes
			// take no API key; POST /api/v1/mqtt/credentials is a viewer's
			// by design (it issues a read-only certificate, it mutates
			// nothing the API lists).
			continue
		}
		body := ""
		if op.body {
			body = "{}"
		}
		code, e, raw := call(t, api, op.method, cp.baseURL+resolve(op.path), viewer.Key, body)
		if code != http.StatusForbidden || e.Error.Code != "FORBIDDEN" {
			t.Errorf("viewer %s %s: %d %s, want 403 FORBIDDEN", op.method, op.path, code, raw)
		}
		checked = append(checked, op.method+" "+op.path)
	}
	// docs/api.md has 13 operator and admin mutations; the document may
	// grow, never shrink below them.
	if len(checked) < 13 {
		t.Errorf("only %d mutating operations in the OpenAPI document: %v", len(checked), checked)
	}
	if h := auditHead(); h != head {
		t.Errorf("the viewer's requests changed the audit chain: head %d → %d", head, h)
	}

	// Malformed JSON everywhere a body is read, with the credential that
	// gets the request as far as reading it.
	checked = checked[:0]
	for _, op := range ops {
		if !op.body {
			continue
		}
		key, c := "", api
		switch {
		case op.role != "":
			key = cp.adminKey
		case op.mtls:
			c = cp.httpClient(&devCert)
		}
		code, e, raw := call(t, c, op.method, cp.baseURL+resolve(op.path), key, `{"name":`)
		if code != http.StatusBadRequest || e.Error.Code != "BAD_REQUEST" {
			t.Errorf("malformed JSON to %s %s: %d %s, want 400 BAD_REQUEST", op.method, op.path, code, raw)
		}
		checked = append(checked, op.method+" "+op.path)
	}
	if len(checked) < 10 {
		t.Errorf("only %d operations with a body in the OpenAPI document: %v", len(checked), checked)
	}
	t.Logf("malformed JSON refused by %d operations: %s", len(checked), strings.Join(checked, ", "))
	if h := auditHead(); h != head {
		t.Errorf("malformed requests changed the audit chain: head %d → %d", head, h)
	}
	var d client.Device
	cp.tgctlJSON(&d, "device", "get", dev)
	if d.Status != "enrolled" {
		t.Errorf("device %s is %s after the refused requests", dev, d.Status)
	}
	cp.shutdown()
}
