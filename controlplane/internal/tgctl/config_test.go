package tgctl

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeContexts(t *testing.T, e env, cf *ConfigFile) {
	t.Helper()
	if err := saveConfig(e.configPath(), cf); err != nil {
		t.Fatal(err)
	}
}

// TestPrecedence checks which server gets the request and which key it
// carries, over flags, environment and context file.
func TestPrecedence(t *testing.T) {
	t.Parallel()
	a, b := newFakeServer(t), newFakeServer(t)
	tests := []struct {
		name     string
		noFile   bool
		env      env
		args     []string
		wantSrv  *fakeServer // nil: no request at all
		wantKey  string
		wantCode int
		wantErr  string
	}{
		{name: "context", wantSrv: a, wantKey: "ctxA"},
		{name: "--context picks another", args: []string{"--context", "other"}, wantSrv: b, wantKey: "ctxB"},
		{name: "env key over context", env: env{"TG_API_KEY": "envkey"}, wantSrv: a, wantKey: "envkey"},
		{name: "flag key over env", env: env{"TG_API_KEY": "envkey"}, args: []string{"--api-key", "flagkey"}, wantSrv: a, wantKey: "flagkey"},
		{name: "env server over context keeps the context key away", env: env{"TG_BASE_URL": b.URL}, wantCode: 1, wantErr: "no API key"},
		{name: "env server and env key", env: env{"TG_BASE_URL": b.URL, "TG_API_KEY": "envkey"}, wantSrv: b, wantKey: "envkey"},
		{name: "flag server over env server", env: env{"TG_BASE_URL": a.URL, "TG_API_KEY": "envkey"}, args: []string{"--server", b.URL}, wantSrv: b, wantKey: "envkey"},
		{name: "env server equal to the context's", env: env{"TG_BASE_URL": a.URL + "/"}, wantSrv: a, wantKey: "ctxA"},
		{name: "flag server of another context", args: []string{"--server", b.URL, "--context", "other"}, wantSrv: b, wantKey: "ctxB"},
		{name: "unknown context", args: []string{"--context", "nope"}, wantCode: 1, wantErr: `no context "nope"`},
		{name: "no file, no settings", noFile: true, wantCode: 1, wantErr: "no server"},
		{name: "no file, env only", noFile: true, env: env{"TG_BASE_URL": b.URL, "TG_API_KEY": "envkey"}, wantSrv: b, wantKey: "envkey"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			for k, v := range tt.env {
				e[k] = v
			}
			if !tt.noFile {
				writeContexts(t, e, &ConfigFile{CurrentContext: "default", Contexts: []Context{
					{Name: "default", Server: a.URL, APIKey: "ctxA"},
					{Name: "other", Server: b.URL, APIKey: "ctxB"},
				}})
			}
			na, nb := a.requests(), b.requests()
			r := run(t, e, "", append([]string{"whoami", "-o", "json"}, tt.args...)...)
			if r.code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr: %s", r.code, tt.wantCode, r.stderr)
			}
			if tt.wantErr != "" && !strings.Contains(r.stderr, tt.wantErr) {
				t.Fatalf("stderr %q, want %q", r.stderr, tt.wantErr)
			}
			if tt.wantSrv == nil {
				if a.requests() != na || b.requests() != nb {
					t.Fatal("a server got a request")
				}
				return
			}
			if other := map[*fakeServer]*fakeServer{a: b, b: a}[tt.wantSrv]; other.requests() != map[*fakeServer]int{a: na, b: nb}[other] {
				t.Fatal("the other server got a request")
			}
			auth, _ := tt.wantSrv.last()
			if auth != "Bearer "+tt.wantKey {
				t.Fatalf("Authorization %q, want key %q", auth, tt.wantKey)
			}
			var who struct {
				KeyID string `json:"key_id"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &who); err != nil || who.KeyID != "key-of-"+strings.ToUpper(tt.wantKey) {
				t.Fatalf("whoami output %q (%v)", r.stdout, err)
			}
		})
	}
}

// TestResolveCA checks that the CA file and hash travel together.
func TestResolveCA(t *testing.T) {
	t.Parallel()
	const h1, h2 = "sha256:11", "sha256:22"
	tests := []struct {
		name               string
		env                env
		flagFile, flagHash string
		server             string
		wantFile, wantHash string
		wantFrom           string
	}{
		{name: "context", wantHash: h1, wantFrom: "context"},
		{name: "env file replaces the context's hash", env: env{"TG_CA_FILE": "/env.pem"}, wantFile: "/env.pem", wantFrom: "env"},
		{name: "env hash", env: env{"TG_CA_HASH": h2}, wantHash: h2, wantFrom: "env"},
		{name: "flag file over env hash", env: env{"TG_CA_HASH": h2}, flagFile: "/flag.pem", wantFile: "/flag.pem", wantFrom: "flag"},
		{name: "flag hash over env file", env: env{"TG_CA_FILE": "/env.pem"}, flagHash: h2, wantHash: h2, wantFrom: "flag"},
		{name: "context CA not used for another server", server: "https://elsewhere:8000", wantFrom: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			for k, v := range tt.env {
				e[k] = v
			}
			writeContexts(t, e, &ConfigFile{CurrentContext: "c", Contexts: []Context{{Name: "c", Server: "https://cp:8000", APIKey: "k", CAHash: h1}}})
			a := &App{Getenv: func(k string) string { return e[k] }}
			a.defaults()
			a.global = globalFlags{caFile: tt.flagFile, caHash: tt.flagHash, server: tt.server}
			s, err := a.resolve()
			if err != nil {
				t.Fatal(err)
			}
			if s.CAFile != tt.wantFile || s.CAHash != tt.wantHash || s.CAFrom != tt.wantFrom {
				t.Fatalf("CA file %q hash %q from %q, want %q %q %q", s.CAFile, s.CAHash, s.CAFrom, tt.wantFile, tt.wantHash, tt.wantFrom)
			}
		})
	}
}

func TestConfigFile(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, text, wantErr string }{
		{"empty", "", ""},
		{"minimal", "version: 1\ncontexts: []\n", ""},
		{"unknown key", "version: 1\ncontexts: []\ncolour: blue\n", "colour"},
		{"future version", "version: 2\n", "version 2"},
		{"no version", "contexts: []\n", "version 0"},
		{"duplicate context", "version: 1\ncontexts:\n- name: a\n  server: http://x\n- name: a\n  server: http://y\n", "twice"},
		{"nameless context", "version: 1\ncontexts:\n- server: http://x\n", "no name"},
	} {
		_, err := parseConfig([]byte(tt.text))
		if (err == nil) != (tt.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s: err = %v, want %q", tt.name, err, tt.wantErr)
		}
	}
	// A file readable by others draws a warning (it holds keys).
	e := newEnv(t)
	writeContexts(t, e, &ConfigFile{})
	if err := os.Chmod(e.configPath(), 0o644); err != nil {
		t.Fatal(err)
	}
	r := run(t, e, "", "context", "list")
	if r.code != 0 || !strings.Contains(r.stderr, "accessible by other users") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	// XDG_CONFIG_HOME unset: ~/.config.
	e2 := env{"HOME": t.TempDir()}
	a := &App{Getenv: func(k string) string { return e2[k] }}
	if p, _ := a.configPath(); p != filepath.Join(e2["HOME"], ".config", "tensorguard", "tgctl.yaml") {
		t.Fatalf("config path %s", p)
	}
}
