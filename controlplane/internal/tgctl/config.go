package tgctl

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
)

// The context file: where `tgctl login` keeps servers, API keys, trust
// settings and each context's audit anchor. It holds secrets, so it is
// written with mode 0600 in a 0700 directory, atomically (temporary file,
// fsync, rename).

const configVersion = 1

// ConfigFile is the context file's content.
type ConfigFile struct {
	Version        int       `yaml:"version"`
	CurrentContext string    `yaml:"current_context,omitempty"`
	Contexts       []Context `yaml:"contexts"`
}

// Context is one named control plane and credential.
type Context struct {
	Name   string `yaml:"name"`
	Server string `yaml:"server"`
	APIKey string `yaml:"api_key,omitempty"`
	CAFile string `yaml:"ca_file,omitempty"`
	CAHash string `yaml:"ca_hash,omitempty"`
	// Tenant is the tenant the key belonged to at login.
	Tenant string `yaml:"tenant,omitempty"`
	// AuditAnchor is the audit chain's head checkpoint
	// ("tenant@seq:hash") from the last successful `tgctl audit verify`;
	// the next verification must reach it unchanged.
	AuditAnchor string `yaml:"audit_anchor,omitempty"`
}

// defaultContextName is the context login writes without --context.
const defaultContextName = "default"

// configPath is $XDG_CONFIG_HOME/tensorguard/tgctl.yaml, else
// $HOME/.config/tensorguard/tgctl.yaml.
func (a *App) configPath() (string, error) {
	if x := a.Getenv("XDG_CONFIG_HOME"); x != "" && filepath.IsAbs(x) {
		return filepath.Join(x, "tensorguard", "tgctl.yaml"), nil
	}
	home := a.Getenv("HOME")
	if home == "" {
		h, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the context file: %w", err)
		}
		home = h
	}
	return filepath.Join(home, ".config", "tensorguard", "tgctl.yaml"), nil
}

// loadConfig reads the context file; a missing file is an empty one.
func (a *App) loadConfig() (*ConfigFile, string, error) {
	path, err := a.configPath()
	if err != nil {
		return nil, "", err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &ConfigFile{Version: configVersion}, path, nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("read context file: %w", err)
	}
	cf, err := parseConfig(b)
	if err != nil {
		return nil, "", fmt.Errorf("context file %s: %w", path, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(a.Stderr, "tgctl: warning: %s is accessible by other users (mode %04o); it holds API keys: chmod 600 it\n", path, fi.Mode().Perm())
	}
	return cf, path, nil
}

func parseConfig(b []byte) (*ConfigFile, error) {
	var cf ConfigFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cf); err != nil {
		if len(bytes.TrimSpace(b)) == 0 {
			return &ConfigFile{Version: configVersion}, nil
		}
		return nil, err
	}
	if cf.Version != configVersion {
		return nil, fmt.Errorf("version %d is not supported (want %d)", cf.Version, configVersion)
	}
	seen := map[string]bool{}
	for _, c := range cf.Contexts {
		if c.Name == "" {
			return nil, errors.New("a context has no name")
		}
		if seen[c.Name] {
			return nil, fmt.Errorf("context %q appears twice", c.Name)
		}
		seen[c.Name] = true
	}
	return &cf, nil
}

// saveConfig writes the context file atomically with mode 0600.
func saveConfig(path string, cf *ConfigFile) error {
	cf.Version = configVersion
	b, err := yaml.Marshal(cf)
	if err != nil {
		return fmt.Errorf("encode context file: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	tmp, err := os.CreateTemp(dir, ".tgctl-*.yaml")
	if err != nil {
		return fmt.Errorf("write context file: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write context file: %w", err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write context file: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write context file: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write context file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write context file: %w", err)
	}
	return nil
}

// context returns the named context, or nil.
func (cf *ConfigFile) context(name string) *Context {
	for i := range cf.Contexts {
		if cf.Contexts[i].Name == name {
			return &cf.Contexts[i]
		}
	}
	return nil
}

// upsert stores c under its name.
func (cf *ConfigFile) upsert(c Context) {
	if old := cf.context(c.Name); old != nil {
		*old = c
		return
	}
	cf.Contexts = append(cf.Contexts, c)
}

// Settings is what a command connects with, after precedence.
type Settings struct {
	Server, APIKey, CAFile, CAHash string
	// Sources say where each value came from: "flag", "env", "context" or "".
	ServerFrom, APIKeyFrom, CAFrom string
	// ContextName is the context in effect ("" if none); Context is it, or
	// nil. Its credentials and CA apply only when the server is the
	// context's (InContext).
	ContextName string
	Context     *Context
	InContext   bool

	file *ConfigFile
	path string
}

// resolve applies the precedence flags > environment > context file, per
// setting. The context's API key and CA settings are used only for the
// context's own server: pointing --server or TG_BASE_URL elsewhere never
// sends the context's key there.
func (a *App) resolve() (*Settings, error) {
	return a.resolveFor(false)
}

// resolveFor is resolve; forLogin allows --context to name a context that
// does not exist yet, and picks "default" when there is none.
func (a *App) resolveFor(forLogin bool) (*Settings, error) {
	cf, path, err := a.loadConfig()
	if err != nil {
		return nil, err
	}
	s := &Settings{file: cf, path: path}
	s.ContextName = a.global.context
	if s.ContextName == "" {
		s.ContextName = cf.CurrentContext
	}
	if s.ContextName == "" && forLogin {
		s.ContextName = defaultContextName
	}
	if s.ContextName != "" {
		s.Context = cf.context(s.ContextName)
		if s.Context == nil && a.global.context != "" && !forLogin {
			return nil, fmt.Errorf("no context %q in %s (tgctl login --context %s …)", s.ContextName, path, s.ContextName)
		}
	}
	pick := func(flag, env string) (string, string) {
		if flag != "" {
			return flag, "flag"
		}
		if v := a.Getenv(env); v != "" {
			return v, "env"
		}
		return "", ""
	}
	s.Server, s.ServerFrom = pick(a.global.server, "TG_BASE_URL")
	if ctx := s.Context; ctx != nil {
		if s.Server == "" {
			s.Server, s.ServerFrom = ctx.Server, "context"
		}
		s.InContext = sameServer(s.Server, ctx.Server)
	}
	s.APIKey, s.APIKeyFrom = pick(a.global.apiKey, "TG_API_KEY")
	if s.APIKey == "" && s.InContext && s.Context.APIKey != "" {
		s.APIKey, s.APIKeyFrom = s.Context.APIKey, "context"
	}
	// The CA file and hash go together: the first level that sets either
	// decides both, so a context's pin never mixes with a flag's file.
	switch {
	case a.global.caFile != "" || a.global.caHash != "":
		s.CAFile, s.CAHash, s.CAFrom = a.global.caFile, a.global.caHash, "flag"
	case a.Getenv("TG_CA_FILE") != "" || a.Getenv("TG_CA_HASH") != "":
		s.CAFile, s.CAHash, s.CAFrom = a.Getenv("TG_CA_FILE"), a.Getenv("TG_CA_HASH"), "env"
	case s.InContext && (s.Context.CAFile != "" || s.Context.CAHash != ""):
		s.CAFile, s.CAHash, s.CAFrom = s.Context.CAFile, s.Context.CAHash, "context"
	}
	return s, nil
}

func sameServer(a, b string) bool {
	ua, err1 := client.ParseBaseURL(a)
	ub, err2 := client.ParseBaseURL(b)
	if err1 != nil || err2 != nil {
		return a == b
	}
	return ua.String() == ub.String()
}

// newClient builds a client for the resolved settings.
func (a *App) newClient(s *Settings) (*client.Client, error) {
	if s.Server == "" {
		return nil, errors.New("no server: pass --server, set TG_BASE_URL, or run 'tgctl login'")
	}
	opts := []client.Option{client.WithTimeout(a.global.timeout), client.WithUserAgent(a.userAgent())}
	if s.CAFile != "" {
		opts = append(opts, client.WithCAFile(s.CAFile))
	}
	if s.CAHash != "" {
		opts = append(opts, client.WithCAHash(s.CAHash))
	}
	return client.New(s.Server, s.APIKey, opts...)
}

// client resolves the settings and returns a client that has an API key.
func (a *App) client() (*client.Client, *Settings, error) {
	s, err := a.resolve()
	if err != nil {
		return nil, nil, err
	}
	c, err := a.newClient(s)
	if err != nil {
		return nil, nil, err
	}
	if s.APIKey == "" {
		return nil, nil, errors.New("no API key: pass --api-key, set TG_API_KEY, or run 'tgctl login'")
	}
	return c, s, nil
}
