package tgctl

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func fakeEnv(t *testing.T, f *fakeServer) env {
	e := newEnv(t)
	e["TG_BASE_URL"], e["TG_API_KEY"] = f.URL, "tgk_key-x_secretsecret"
	return e
}

func TestGoldenTables(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t)
	e := fakeEnv(t, f)
	for _, tt := range []struct {
		golden string
		args   []string
	}{
		{"fleet_list.golden", []string{"fleet", "list"}},
		{"device_list.golden", []string{"device", "list"}},
		{"token_list.golden", []string{"token", "list", "jetsons"}},
		{"token_create.golden", []string{"token", "create", "jetsons", "--ttl", "1h"}},
		{"whoami.golden", []string{"whoami"}},
	} {
		t.Run(tt.golden, func(t *testing.T) {
			out := mustRun(t, e, tt.args...)
			golden(t, tt.golden, strings.ReplaceAll(out, f.URL, "http://SERVER"))
			if !strings.HasSuffix(tt.golden, "create.golden") {
				noSecret(t, e["TG_API_KEY"], out)
			}
		})
	}
}

// TestJSONOutput checks that -o json prints the API's objects unchanged:
// decoded, they equal what the server sent.
func TestJSONOutput(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t)
	e := fakeEnv(t, f)
	for _, tt := range []struct {
		args    []string
		fixture string
	}{
		{[]string{"fleet", "list"}, "GET /api/v1/fleets"},
		{[]string{"device", "list"}, "GET /api/v1/devices"},
		{[]string{"token", "list", "jetsons"}, "GET /api/v1/fleets/jetsons/enrollment-tokens"},
		{[]string{"token", "create", "jetsons"}, "POST /api/v1/fleets/jetsons/enrollment-tokens"},
	} {
		out := mustRun(t, e, append(tt.args, "-o", "json")...)
		if !strings.HasPrefix(out, "[\n  {\n    \"id\"") && !strings.HasPrefix(out, "{\n  \"id\"") {
			t.Errorf("%v: not indented JSON:\n%s", tt.args, out)
		}
		var got, want any
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if err := json.Unmarshal([]byte(fixtures[tt.fixture]), &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%v: JSON output\n%s\nis not the API's\n%s", tt.args, out, fixtures[tt.fixture])
		}
	}
}

func TestErrorRendering(t *testing.T) {
	t.Parallel()
	f := newFakeServer(t)
	e := fakeEnv(t, f)
	for _, tt := range []struct {
		args       []string
		wantCode   int
		wantStderr string
	}{
		{[]string{"fleet", "get", "missing"}, 1, "tgctl: NOT_FOUND: fleet missing not found (request req-42)\n"},
		{[]string{"fleet", "get", "proxy"}, 1, "tgctl: HTTP 502 Bad Gateway: unexpected response (text/html): \"<html><body>502 Bad Gateway</body></html>\" (request req-fake)\n"},
		{[]string{"fleet", "get"}, 2, "tgctl: tgctl fleet get: accepts 1 arg(s), received 0 (usage: tgctl fleet get FLEET [flags])\nRun 'tgctl fleet get --help' for usage.\n"},
		{[]string{"fleet", "nope"}, 2, "tgctl: unknown command \"nope\" for \"tgctl fleet\"\nRun 'tgctl fleet --help' for usage.\n"},
		{[]string{"nope"}, 2, "tgctl: unknown command \"nope\" for \"tgctl\"\nRun 'tgctl --help' for usage.\n"},
		{[]string{"fleet", "list", "--bogus"}, 2, "tgctl: unknown flag: --bogus\nRun 'tgctl fleet list --help' for usage.\n"},
		{[]string{"fleet", "list", "-o", "yaml"}, 2, "tgctl: -o \"yaml\": want table or json\nRun 'tgctl fleet list --help' for usage.\n"},
		{[]string{"token", "create", "jetsons", "--ttl", "soon"}, 2, "tgctl: invalid argument \"soon\" for \"--ttl\" flag: \"soon\": want a duration such as 24h or whole days such as 7d\nRun 'tgctl token create --help' for usage.\n"},
		{[]string{"operator", "create", "bob"}, 2, "tgctl: --role is required (viewer, operator or admin)\nRun 'tgctl operator create --help' for usage.\n"},
		{[]string{"device", "label", "dev-1", "novalue"}, 2, "tgctl: label \"novalue\": want key=value, or key- to remove\nRun 'tgctl device label --help' for usage.\n"},
		{[]string{"fleet", "update", "jetsons"}, 2, "tgctl: nothing to update: pass a policy flag (see --help)\nRun 'tgctl fleet update --help' for usage.\n"},
	} {
		r := run(t, e, "", tt.args...)
		if r.code != tt.wantCode || r.stderr != tt.wantStderr || r.stdout != "" {
			t.Errorf("tgctl %s: exit %d, stderr %q, stdout %q; want exit %d, stderr %q",
				strings.Join(tt.args, " "), r.code, r.stderr, r.stdout, tt.wantCode, tt.wantStderr)
		}
	}
}
