package api_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/api"
)

func routeSet(routes ...[]api.Route) map[string]api.Route {
	m := map[string]api.Route{}
	for _, rs := range routes {
		for _, r := range rs {
			m[r.Method+" "+r.Path] = r
		}
	}
	return m
}

func docOperations(t *testing.T) map[string]map[string]any {
	t.Helper()
	ops := map[string]map[string]any{}
	paths, _ := openAPIDoc(t)["paths"].(map[string]any)
	for p, item := range paths {
		for method, op := range item.(map[string]any) {
			ops[strings.ToUpper(method)+" "+p] = op.(map[string]any)
		}
	}
	return ops
}

func diff(t *testing.T, what string, a, b map[string]bool) {
	t.Helper()
	var missing []string
	for k := range a {
		if !b[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	for _, k := range missing {
		t.Errorf("%s: %s", what, k)
	}
}

// TestOpenAPICoversRoutes: the document describes exactly the routes the
// router registers plus the core's, with the right role and error
// responses.
func TestOpenAPICoversRoutes(t *testing.T) {
	t.Parallel()
	routes := routeSet(api.Routes(), api.ExternalRoutes())
	ops := docOperations(t)
	inRoutes, inDoc := map[string]bool{}, map[string]bool{}
	for k := range routes {
		inRoutes[k] = true
	}
	for k := range ops {
		inDoc[k] = true
	}
	diff(t, "route missing from the OpenAPI document", inRoutes, inDoc)
	diff(t, "OpenAPI operation with no route (add it to routes.go or ExternalRoutes)", inDoc, inRoutes)

	ids := map[string]string{}
	for k, op := range ops {
		id, _ := op["operationId"].(string)
		if prev, dup := ids[id]; dup || id == "" {
			t.Errorf("%s: operationId %q empty or also used by %s", k, id, prev)
		}
		ids[id] = k
		rt, ok := routes[k]
		if !ok {
			continue
		}
		responses, _ := op["responses"].(map[string]any)
		need := []string{"500"}
		switch rt.Role {
		case "viewer", "operator", "admin":
			if op["x-required-role"] != rt.Role {
				t.Errorf("%s: x-required-role %v, route needs %s", k, op["x-required-role"], rt.Role)
			}
			need = append(need, "401", "403")
		}
		if _, ok := op["requestBody"]; ok {
			need = append(need, "400", "413", "415")
		}
		if strings.Contains(rt.Path, "{") {
			need = append(need, "404")
		}
		for _, s := range need {
			if _, ok := responses[s]; !ok {
				t.Errorf("%s: no %s response documented", k, s)
			}
		}
		for _, m := range regexp.MustCompile(`\{[a-z]+\}`).FindAllString(rt.Path, -1) {
			found := false
			for _, p := range asSlice(op["parameters"]) {
				if pm := p.(map[string]any); pm["in"] == "path" && "{"+pm["name"].(string)+"}" == m {
					found = true
				}
			}
			if !found {
				t.Errorf("%s: path parameter %s not documented", k, m)
			}
		}
	}
	// Every $ref resolves.
	doc := openAPIDoc(t)
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if r, ok := x["$ref"].(string); ok && dig(doc, strings.Split(strings.TrimPrefix(r, "#/"), "/")...) == nil {
				t.Errorf("unresolved $ref %s", r)
			}
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(doc)
}

// TestRoutesRegistered: every route of the table reaches its handler
// through New (401 without a key, not the router's 404 or 405), and the
// core's /api/v1 routes are known to the router.
func TestRoutesRegistered(t *testing.T) {
	t.Parallel()
	c := newClient(t, "")
	for _, rt := range append(api.Routes(), api.ExternalRoutes()...) {
		if !strings.HasPrefix(rt.Path, "/api/v1/") {
			continue
		}
		path := strings.NewReplacer("{id}", "x", "{fleet}", "x").Replace(rt.Path)
		st, _, raw := c.env.Do(rt.Method, path, "", nil)
		switch {
		case rt.Path == "/api/v1/openapi.json":
			if st != 200 {
				t.Errorf("%s %s: %d", rt.Method, rt.Path, st)
			}
		case rt.Role == "viewer" || rt.Role == "operator" || rt.Role == "admin":
			if st != 401 {
				t.Errorf("%s %s without a key: %d %s, want 401", rt.Method, rt.Path, st, raw)
			}
		default: // the core's
			if st != 404 || !strings.Contains(string(raw), "core") {
				t.Errorf("%s %s: %d %s, want the not-mounted 404", rt.Method, rt.Path, st, raw)
			}
		}
	}
	// The served document is OpenAPIJSON.
	st, _, raw := c.env.Do("GET", "/api/v1/openapi.json", "", nil)
	want, err := api.OpenAPIJSON()
	if err != nil || st != 200 || string(raw) != string(want) {
		t.Errorf("served document differs from OpenAPIJSON (%d, %v)", st, err)
	}
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
}

// TestDocsAPIMatchesRoutes: the route table of docs/api.md names exactly
// the routes served here and by the core.
func TestDocsAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	md, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	inDocs := map[string]bool{}
	tick := regexp.MustCompile("`([^`]+)`")
	method := regexp.MustCompile(`^[A-Z]+(·[A-Z]+)*$`)
	for _, line := range strings.Split(string(md), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cell := strings.Split(line, "|")[1]
		path := ""
		for _, m := range tick.FindAllStringSubmatch(cell, -1) {
			methods, p, hasPath := strings.Cut(m[1], " ")
			if hasPath {
				path, _, _ = strings.Cut(p, "?")
			}
			if !method.MatchString(methods) || path == "" {
				t.Errorf("docs/api.md: cannot read route %q", m[1])
				continue
			}
			for _, mm := range strings.Split(methods, "·") {
				inDocs[mm+" "+path] = true
			}
		}
	}
	served := map[string]bool{}
	for k := range routeSet(api.Routes(), api.ExternalRoutes()) {
		served[k] = true
	}
	diff(t, "docs/api.md route not served", inDocs, served)
	diff(t, "served route missing from docs/api.md", served, inDocs)
}
