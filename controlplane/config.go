package controlplane

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tensorguard/tensorguardflow/internal/kek"
)

// Environments.
const (
	EnvDevelopment = "development"
	EnvProduction  = "production"
)

// Environment variables the configuration reads (the seed's names).
const (
	EnvVarEnvironment = "TG_ENVIRONMENT"
	EnvVarSecretKey   = "TG_SECRET_KEY"
	EnvVarKeyMaster   = "TG_KEY_MASTER"
	EnvVarDatabaseURL = "DATABASE_URL"
)

// ConfigVersion is the only configuration file version this build reads.
const ConfigVersion = 1

// MinSecretKeyLen is the shortest TG_SECRET_KEY accepted (bytes).
const MinSecretKeyLen = 32

// Defaults.
const (
	DefaultListen          = ":8000"
	DefaultMQTTListen      = ":8883"
	DefaultProdDataDir     = "/var/lib/tensorguard/controlplane"
	DefaultDevDataDir      = "./.tg-data"
	DefaultShutdownTimeout = 15 * time.Second
	DefaultCertTTL         = 24 * time.Hour
	// KEKFileName is the development KEK that init generates in the data
	// directory when TG_KEY_MASTER is not set.
	KEKFileName = "kek.key"
)

// MQTT broker modes.
const (
	MQTTEmbedded = "embedded"
	MQTTExternal = "external"
)

// Config is the control plane's configuration. Precedence: defaults < YAML
// file < environment < flags (the caller applies flags after Load).
type Config struct {
	Version int `yaml:"version"`
	// Environment is "development" or "production" (TG_ENVIRONMENT).
	Environment string `yaml:"environment"`
	// DataDir holds the SQLite database, the platform CA and, in
	// development, the generated KEK file.
	DataDir string `yaml:"data_dir"`
	// DatabaseURL is a store DSN (DATABASE_URL); default
	// sqlite://<data_dir>/controlplane.db.
	DatabaseURL string `yaml:"database_url"`

	HTTP       HTTPConfig       `yaml:"http"`
	MQTT       MQTTConfig       `yaml:"mqtt"`
	KEK        kek.Config       `yaml:"kek"`
	SecretKey  SecretConfig     `yaml:"secret_key"`
	Enrollment EnrollmentConfig `yaml:"enrollment"`
	Log        LogConfig        `yaml:"log"`
	// Attestation is the fleet attestation service.
	Attestation AttestationConfig `yaml:"attestation"`
	// Packages is the package registry.
	Packages PackagesConfig `yaml:"packages"`

	// ShutdownTimeout bounds the drain after SIGTERM.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
}

// HTTPConfig is the API listener.
type HTTPConfig struct {
	// Listen is the one port for HTTPS (and development plain HTTP).
	Listen string `yaml:"listen"`
	// Hostnames go into the server certificate next to localhost,
	// 127.0.0.1 and ::1.
	Hostnames []string `yaml:"hostnames"`
	// AllowPlainLoopback serves plain HTTP on the same port to loopback
	// clients. Development only; default true there, refused in production.
	AllowPlainLoopback *bool `yaml:"allow_plain_loopback"`
}

// MQTTConfig is the broker.
type MQTTConfig struct {
	// Mode is "embedded" (default: mochi inside the control plane) or
	// "external" (an MQTT broker such as mosquitto at ExternalURL).
	Mode string `yaml:"mode"`
	// Listen is the embedded broker's mTLS listener.
	Listen string `yaml:"listen"`
	// InsecureDevListen adds a plain-TCP loopback listener (development
	// only).
	InsecureDevListen string `yaml:"insecure_dev_listen"`
	// External is the external broker (mode external).
	External ExternalMQTTConfig `yaml:"external"`
	// PublicURL is the broker URL given to clients (mqtt credentials);
	// default ssl://<first hostname or localhost>:<port of Listen>.
	PublicURL string `yaml:"public_url"`
}

// ExternalMQTTConfig is an external MQTT broker.
type ExternalMQTTConfig struct {
	// URL is the broker (ssl://host:8883, tls:// or mqtts://), reached over
	// mTLS as the control plane identity; its server certificate must chain
	// to the platform CA (mosquitto-config issues one).
	URL string `yaml:"url"`
	// Mosquitto, when set, makes the control plane keep a mosquitto's
	// files (ACL, CRL, CA bundle, server certificate) up to date and reload
	// it after every change. Without it the broker's authorisation is
	// someone else's job.
	Mosquitto *MosquittoManagedConfig `yaml:"mosquitto"`
}

// MosquittoManagedConfig is a mosquitto on a host whose files the control
// plane writes.
type MosquittoManagedConfig struct {
	// Dir receives mosquitto.conf (the snippet), ca.pem, crl.pem, acl,
	// server.crt and server.key (absolute path).
	Dir string `yaml:"dir"`
	// Listen is the mTLS listener in the snippet, [host]:port; default
	// ":<port of url>".
	Listen string `yaml:"listen"`
	// PIDFile is mosquitto's pid_file: mosquitto is reloaded with SIGHUP
	// to that pid. Set exactly one of PIDFile and ReloadCommand.
	PIDFile string `yaml:"pid_file"`
	// ReloadCommand is run (argv, no shell) to reload mosquitto, e.g.
	// [systemctl, reload, mosquitto].
	ReloadCommand []string `yaml:"reload_command"`
	// Group is the group the files are given to, so that mosquitto (which
	// drops to user mosquitto) can read them; default "mosquitto" when that
	// group exists, else the files keep the control plane's group.
	Group string `yaml:"group"`
}

// SecretConfig says where TG_SECRET_KEY comes from.
type SecretConfig struct {
	// Env names the environment variable; default TG_SECRET_KEY.
	Env string `yaml:"env"`
	// File is a file holding the secret (e.g. a systemd credential).
	File string `yaml:"file"`
}

// AttestationConfig is the fleet attestation service (issue 4).
type AttestationConfig struct {
	// Interval is how often every attestable device is challenged
	// (±10 % jitter); a device without a valid answer for two intervals is
	// stale. Default 60s.
	Interval Duration `yaml:"interval"`
}

// PackagesConfig is the package registry (issue 5).
type PackagesConfig struct {
	// Dir holds the package files (the local blob store) and the uploads
	// being verified; default <data_dir>/packages. Replicas share it (a
	// network file system) until an object store replaces it.
	Dir string `yaml:"dir"`
	// MaxSize bounds one pushed package, in bytes; default 4 GiB.
	MaxSize int64 `yaml:"max_size"`
}

// DefaultMaxPackageSize is packages.max_size when unset.
const DefaultMaxPackageSize int64 = 4 << 30

// PackagesDir is packages.dir, or <data_dir>/packages when unset (resolved
// here rather than filled in, so it follows a data dir set later).
func (c *Config) PackagesDir() string {
	if c.Packages.Dir != "" {
		return c.Packages.Dir
	}
	return filepath.Join(c.DataDir, "packages")
}

// EnrollmentConfig is the server-wide enrollment policy; each fleet's policy
// narrows it further.
type EnrollmentConfig struct {
	// AllowedTPMKinds lists the TPM kinds the server accepts at all:
	// hardware, swtpm, simulated, none. Default: every kind in development,
	// hardware and none in production (where swtpm and simulated are
	// refused).
	AllowedTPMKinds []string `yaml:"allowed_tpm_kinds"`
	// EKRoots and EKIntermediates are PEM files of TPM manufacturer CAs.
	EKRoots         []string `yaml:"ek_roots"`
	EKIntermediates []string `yaml:"ek_intermediates"`
	// AllowEKWithoutCert trusts an EK without a certificate on first use
	// (hardware and swtpm). Simulated TPMs never have one and are trusted on
	// first use whenever their kind is allowed (never in production).
	AllowEKWithoutCert bool `yaml:"allow_ek_without_cert"`
	// DefaultCertTTL is a device certificate's lifetime when the fleet
	// policy sets none.
	DefaultCertTTL Duration `yaml:"default_cert_ttl"`
}

// LogConfig is the logger.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// Duration is a time.Duration written as a Go duration string in YAML.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// DefaultConfig returns the defaults for an environment.
func DefaultConfig(environment string) Config {
	c := Config{Version: ConfigVersion, Environment: environment}
	c.fillDefaults()
	return c
}

func (c *Config) fillDefaults() {
	if c.Version == 0 {
		c.Version = ConfigVersion
	}
	if c.Environment == "" {
		c.Environment = EnvDevelopment
	}
	prod := c.Environment == EnvProduction
	if c.DataDir == "" {
		c.DataDir = DefaultDevDataDir
		if prod {
			c.DataDir = DefaultProdDataDir
		}
	}
	if c.DatabaseURL == "" {
		c.DatabaseURL = "sqlite://" + filepath.Join(c.DataDir, "controlplane.db")
	}
	if c.HTTP.Listen == "" {
		c.HTTP.Listen = DefaultListen
	}
	if c.HTTP.AllowPlainLoopback == nil {
		v := !prod
		c.HTTP.AllowPlainLoopback = &v
	}
	if c.MQTT.Mode == "" {
		c.MQTT.Mode = MQTTEmbedded
	}
	if c.MQTT.Listen == "" {
		c.MQTT.Listen = DefaultMQTTListen
	}
	if c.SecretKey.Env == "" && c.SecretKey.File == "" {
		c.SecretKey.Env = EnvVarSecretKey
	}
	if c.KEK.Env == "" && c.KEK.File == "" {
		c.KEK.File = filepath.Join(c.DataDir, KEKFileName)
	}
	if c.Enrollment.AllowedTPMKinds == nil {
		c.Enrollment.AllowedTPMKinds = []string{"hardware", "none"}
		if !prod {
			c.Enrollment.AllowedTPMKinds = []string{"hardware", "swtpm", "simulated", "none"}
		}
	}
	if c.Enrollment.DefaultCertTTL == 0 {
		c.Enrollment.DefaultCertTTL = Duration(DefaultCertTTL)
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	if c.Attestation.Interval == 0 {
		c.Attestation.Interval = Duration(DefaultAttestationInterval)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = Duration(DefaultShutdownTimeout)
	}
	if c.Packages.MaxSize == 0 {
		c.Packages.MaxSize = DefaultMaxPackageSize
	}
}

// LoadConfig builds the configuration from the YAML file at path (none if
// empty) and the environment (getenv, normally os.Getenv), then fills the
// defaults. It does not validate: call Validate after applying flags.
//
// The environment wins over the file: TG_ENVIRONMENT sets Environment,
// DATABASE_URL the database, and a set TG_KEY_MASTER makes it the KEK
// source. Defaults are filled by Finish, after flags, so defaults derived
// from the data dir (the database, the KEK file) follow a --data-dir flag.
func LoadConfig(path string, getenv func(string) string) (Config, error) {
	var c Config
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("read config: %w", err)
		}
		if c, err = ParseConfig(b); err != nil {
			return Config{}, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if getenv == nil {
		getenv = os.Getenv
	}
	if v := getenv(EnvVarEnvironment); v != "" {
		c.Environment = v
	}
	if v := getenv(EnvVarDatabaseURL); v != "" {
		c.DatabaseURL = v
	}
	if getenv(EnvVarKeyMaster) != "" {
		c.KEK = kek.Config{Env: EnvVarKeyMaster}
	}
	return c, nil
}

// ParseConfig reads a YAML configuration file: one document, version 1,
// no unknown keys. Defaults are not filled.
func ParseConfig(b []byte) (Config, error) {
	var c Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		if errors.Is(err, io.EOF) {
			return Config{}, errors.New("empty configuration: it needs at least \"version: 1\"")
		}
		return Config{}, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return Config{}, errors.New("more than one YAML document")
	}
	if c.Version != ConfigVersion {
		return Config{}, fmt.Errorf("version: %d is not supported (this build reads version %d)", c.Version, ConfigVersion)
	}
	return c, nil
}

// Finish fills the defaults that are not yet set; call it after applying
// flags and before Validate.
func (c *Config) Finish() { c.fillDefaults() }

// Production reports whether Environment is production.
func (c *Config) Production() bool { return c.Environment == EnvProduction }

var validKinds = []string{"hardware", "swtpm", "simulated", "none"}

// Validate checks the configuration without opening anything; in
// production it refuses every insecure setting, naming it. The KEK's own
// production check (a generated development key) needs the key and is made
// by New.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Version != ConfigVersion {
		bad("version: %d is not supported (want %d)", c.Version, ConfigVersion)
	}
	switch c.Environment {
	case EnvDevelopment, EnvProduction:
	default:
		bad("environment (%s): %q is neither %q nor %q", EnvVarEnvironment, c.Environment, EnvDevelopment, EnvProduction)
	}
	prod := c.Production()
	if c.DataDir == "" {
		bad("data_dir: empty")
	}
	if c.DatabaseURL == "" {
		bad("database_url (%s): empty", EnvVarDatabaseURL)
	}
	if _, _, err := net.SplitHostPort(c.HTTP.Listen); err != nil {
		bad("http.listen: %v", err)
	}
	if prod && c.HTTP.AllowPlainLoopback != nil && *c.HTTP.AllowPlainLoopback {
		bad("http.allow_plain_loopback: plain HTTP is refused with %s=production (HTTPS only)", EnvVarEnvironment)
	}
	switch c.MQTT.Mode {
	case MQTTEmbedded:
		if _, _, err := net.SplitHostPort(c.MQTT.Listen); err != nil {
			bad("mqtt.listen: %v", err)
		}
	case MQTTExternal:
		u := c.MQTT.External.URL
		if u == "" {
			bad("mqtt.external.url: required with mqtt.mode external")
		} else if !strings.HasPrefix(u, "ssl://") && !strings.HasPrefix(u, "tls://") && !strings.HasPrefix(u, "mqtts://") {
			bad("mqtt.external.url: %q must be an ssl://, tls:// or mqtts:// URL (the broker is reached over mTLS)", u)
		} else if _, _, err := net.SplitHostPort(strings.SplitN(u, "://", 2)[1]); err != nil {
			bad("mqtt.external.url: %q needs host:port", u)
		}
		if m := c.MQTT.External.Mosquitto; m != nil {
			errs = append(errs, m.validate()...)
		}
	default:
		bad("mqtt.mode: %q is neither %q nor %q", c.MQTT.Mode, MQTTEmbedded, MQTTExternal)
	}
	if c.MQTT.Mode != MQTTExternal && (c.MQTT.External.URL != "" || c.MQTT.External.Mosquitto != nil) {
		bad("mqtt.external: set only with mqtt.mode external")
	}
	if c.MQTT.InsecureDevListen != "" && prod {
		bad("mqtt.insecure_dev_listen: plain-TCP MQTT is refused with %s=production", EnvVarEnvironment)
	}
	if err := c.KEK.Validate(); err != nil {
		bad("kek: %v", err)
	}
	if c.SecretKey.Env != "" && c.SecretKey.File != "" {
		bad("secret_key: set env or file, not both")
	}
	for _, k := range c.Enrollment.AllowedTPMKinds {
		if !slices.Contains(validKinds, k) {
			bad("enrollment.allowed_tpm_kinds: unknown kind %q (want %s)", k, strings.Join(validKinds, ", "))
		} else if prod && (k == "simulated" || k == "swtpm") {
			bad("enrollment.allowed_tpm_kinds: %q is a software TPM and is refused with %s=production", k, EnvVarEnvironment)
		}
	}
	if prod && slices.Contains(c.Enrollment.AllowedTPMKinds, "hardware") && len(c.Enrollment.EKRoots) == 0 && !c.Enrollment.AllowEKWithoutCert {
		bad("enrollment.ek_roots: production needs the TPM manufacturers' root CA files to enroll hardware TPMs")
	}
	if c.Enrollment.DefaultCertTTL < Duration(5*time.Minute) {
		bad("enrollment.default_cert_ttl: %s is shorter than 5m", time.Duration(c.Enrollment.DefaultCertTTL))
	}
	if c.Attestation.Interval < Duration(100*time.Millisecond) {
		bad("attestation.interval: %s is below 100ms", time.Duration(c.Attestation.Interval))
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout: must be positive")
	}
	if c.Packages.MaxSize < 1<<20 {
		bad("packages.max_size: %d bytes is below 1 MiB", c.Packages.MaxSize)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format: %q is neither text nor json", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level: %q is not debug, info, warn or error", c.Log.Level)
	}
	if prod {
		if _, err := c.LoadSecretKey(os.Getenv); err != nil {
			bad("%v", err)
		}
	}
	return errors.Join(errs...)
}

// LoadSecretKey reads TG_SECRET_KEY (or the configured variable or file).
// In production it is required and must be at least MinSecretKeyLen bytes;
// in development an absent key yields nil (New then uses a random one).
func (c *Config) LoadSecretKey(getenv func(string) string) ([]byte, error) {
	var v []byte
	var where string
	switch {
	case c.SecretKey.File != "":
		where = "secret_key.file " + c.SecretKey.File
		b, err := os.ReadFile(c.SecretKey.File)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		v = bytes.TrimSpace(b)
	default:
		name := c.SecretKey.Env
		if name == "" {
			name = EnvVarSecretKey
		}
		where = name
		v = []byte(getenv(name))
	}
	if len(v) == 0 {
		if c.Production() {
			return nil, fmt.Errorf("%s: required with %s=production (at least %d random bytes)", where, EnvVarEnvironment, MinSecretKeyLen)
		}
		return nil, nil
	}
	if len(v) < MinSecretKeyLen {
		return nil, fmt.Errorf("%s: %d bytes is too short (at least %d)", where, len(v), MinSecretKeyLen)
	}
	return v, nil
}

func (m *MosquittoManagedConfig) validate() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if m.Dir == "" || !filepath.IsAbs(m.Dir) {
		bad("mqtt.external.mosquitto.dir: %q must be an absolute path", m.Dir)
	}
	if m.Listen != "" {
		if _, _, err := net.SplitHostPort(m.Listen); err != nil {
			bad("mqtt.external.mosquitto.listen: %v", err)
		}
	}
	switch {
	case m.PIDFile != "" && len(m.ReloadCommand) > 0:
		bad("mqtt.external.mosquitto: set pid_file or reload_command, not both")
	case m.PIDFile == "" && len(m.ReloadCommand) == 0:
		bad("mqtt.external.mosquitto: set pid_file (mosquitto's, for SIGHUP) or reload_command; without a reload, revocations would not reach the broker")
	case m.PIDFile != "" && !filepath.IsAbs(m.PIDFile):
		bad("mqtt.external.mosquitto.pid_file: %q must be an absolute path", m.PIDFile)
	case len(m.ReloadCommand) > 0 && m.ReloadCommand[0] == "":
		bad("mqtt.external.mosquitto.reload_command: empty program")
	}
	return errs
}
