package controlplane

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/internal/kek"
)

func TestParseConfig(t *testing.T) {
	cases := []struct {
		name, yaml, wantErr string
	}{
		{"minimal", "version: 1\n", ""},
		{"full", "version: 1\nenvironment: development\nhttp:\n  listen: 127.0.0.1:9000\n  hostnames: [cp.example]\nmqtt:\n  mode: embedded\nenrollment:\n  default_cert_ttl: 12h\nshutdown_timeout: 3s\n", ""},
		{"unknown key", "version: 1\nlisten: :8000\n", "field listen not found"},
		{"unknown nested key", "version: 1\nhttp:\n  port: 8000\n", "field port not found"},
		{"bad version", "version: 2\n", "version: 2 is not supported"},
		{"no version", "environment: development\n", "version: 0 is not supported"},
		{"empty", "", "empty configuration"},
		{"bad duration", "version: 1\nshutdown_timeout: soon\n", "invalid duration"},
		{"two documents", "version: 1\n---\nversion: 1\n", "more than one YAML document"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseConfig([]byte(tc.yaml))
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestLoadConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "cp.yaml")
	if err := os.WriteFile(f, []byte("version: 1\nenvironment: production\ndatabase_url: sqlite:///from-file.db\nkek:\n  file: /etc/kek\nhttp:\n  listen: :9000\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{EnvVarEnvironment: "development", EnvVarDatabaseURL: "postgres://db/x", EnvVarKeyMaster: "k"}
	c, err := LoadConfig(f, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	c.DataDir = "/flag/dir" // a flag
	c.Finish()
	if c.Environment != EnvDevelopment || c.DatabaseURL != "postgres://db/x" || c.KEK.Env != EnvVarKeyMaster || c.KEK.File != "" ||
		c.HTTP.Listen != ":9000" || c.DataDir != "/flag/dir" {
		t.Errorf("precedence: %+v", c)
	}

	c, err = LoadConfig("", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	c.DataDir = "/d"
	c.Finish()
	if c.DatabaseURL != "sqlite:///d/controlplane.db" || c.KEK.File != "/d/kek.key" || !*c.HTTP.AllowPlainLoopback {
		t.Errorf("defaults follow the data dir: %+v", c)
	}
	c = DefaultConfig(EnvProduction)
	if c.DataDir != DefaultProdDataDir || *c.HTTP.AllowPlainLoopback {
		t.Errorf("production defaults: %+v", c)
	}
}

func TestValidateProduction(t *testing.T) {
	t.Setenv(EnvVarSecretKey, strings.Repeat("s", 40))
	roots := filepath.Join(t.TempDir(), "roots.pem")
	base := func() Config {
		c := DefaultConfig(EnvProduction)
		c.Enrollment.EKRoots = []string{roots}
		return c
	}
	if c := base(); c.Validate() != nil {
		t.Fatalf("secure production config refused: %v", c.Validate())
	}
	yes := true
	cases := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"plain HTTP", func(c *Config) { c.HTTP.AllowPlainLoopback = &yes }, "http.allow_plain_loopback"},
		{"simulated TPMs", func(c *Config) { c.Enrollment.AllowedTPMKinds = []string{"hardware", "simulated"} }, "enrollment.allowed_tpm_kinds"},
		{"swtpm", func(c *Config) { c.Enrollment.AllowedTPMKinds = []string{"swtpm"} }, "enrollment.allowed_tpm_kinds"},
		{"plain MQTT", func(c *Config) { c.MQTT.InsecureDevListen = "127.0.0.1:1883" }, "mqtt.insecure_dev_listen"},
		{"missing secret key", func(*Config) { t.Setenv(EnvVarSecretKey, "") }, "TG_SECRET_KEY: required"},
		{"short secret key", func(*Config) { t.Setenv(EnvVarSecretKey, "short") }, "TG_SECRET_KEY: 5 bytes is too short"},
		{"no EK roots", func(c *Config) { c.Enrollment.EKRoots = nil }, "enrollment.ek_roots"},
		{"bad environment", func(c *Config) { c.Environment = "staging" }, "environment (TG_ENVIRONMENT)"},
		{"external broker without URL", func(c *Config) { c.MQTT.Mode = MQTTExternal }, "mqtt.external.url"},
		{"plain external broker", func(c *Config) { c.MQTT.Mode, c.MQTT.External.URL = MQTTExternal, "tcp://b:1883" }, "mqtt.external.url"},
		{"external broker without port", func(c *Config) { c.MQTT.Mode, c.MQTT.External.URL = MQTTExternal, "ssl://b" }, "needs host:port"},
		{"external settings in embedded mode", func(c *Config) { c.MQTT.External.URL = "ssl://b:8883" }, "only with mqtt.mode external"},
		{"mosquitto without reload", func(c *Config) {
			c.MQTT.Mode, c.MQTT.External.URL = MQTTExternal, "ssl://b:8883"
			c.MQTT.External.Mosquitto = &MosquittoManagedConfig{Dir: "/etc/mosquitto/tg"}
		}, "set pid_file"},
		{"mosquitto with both reloads", func(c *Config) {
			c.MQTT.Mode, c.MQTT.External.URL = MQTTExternal, "ssl://b:8883"
			c.MQTT.External.Mosquitto = &MosquittoManagedConfig{Dir: "/etc/mosquitto/tg", PIDFile: "/run/m.pid", ReloadCommand: []string{"true"}}
		}, "not both"},
		{"mosquitto relative dir", func(c *Config) {
			c.MQTT.Mode, c.MQTT.External.URL = MQTTExternal, "ssl://b:8883"
			c.MQTT.External.Mosquitto = &MosquittoManagedConfig{Dir: "tg", PIDFile: "/run/m.pid"}
		}, "absolute path"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvVarSecretKey, strings.Repeat("s", 40))
			c := base()
			tc.mutate(&c)
			err := c.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one naming %q", err, tc.want)
			}
		})
	}
}

// TestProductionRefusesDevelopmentKEK: a KEK written by init in
// development is refused when the same data dir is served in production.
func TestProductionRefusesDevelopmentKEK(t *testing.T) {
	t.Setenv(EnvVarSecretKey, strings.Repeat("s", 40))
	dir := t.TempDir()
	path := filepath.Join(dir, KEKFileName)
	if err := kek.GenerateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig(EnvProduction)
	c.DataDir = dir
	c.KEK = kek.Config{File: path}
	c.Enrollment.AllowEKWithoutCert = true
	_, err := New(c)
	if err == nil || !errors.Is(err, kek.ErrInsecure) || !strings.Contains(err.Error(), "TG_KEY_MASTER") {
		t.Fatalf("New with a development KEK in production: %v", err)
	}
	if _, err := Init(t.Context(), c, "acme"); err == nil || !errors.Is(err, kek.ErrInsecure) {
		t.Fatalf("Init with a development KEK in production: %v", err)
	}
}
