package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tensorguard/tensorguardflow/agent/internal/enroll"
	"github.com/tensorguard/tensorguardflow/agent/internal/inferapi"
)

// Defaults and environment variables.
const (
	DefaultConfigPath = "/etc/tensorguard/agent.yaml"
	DefaultStatePath  = "/var/lib/tensorguard/agent/agent.db"
	DefaultTPMDevice  = "/dev/tpmrm0"
	// DefaultBrokerPort is the control plane's MQTT-over-TLS port; the
	// broker URL defaults to mqtts://<server host>:DefaultBrokerPort.
	DefaultBrokerPort = "8883"

	// EnvEnvironment set to "production" refuses insecure settings.
	EnvEnvironment = "TG_ENVIRONMENT"
	// EnvEnrollToken supplies the enrollment token when the config names
	// none (keeps it out of files and process lists).
	EnvEnrollToken = "TG_ENROLL_TOKEN"

	configVersion = 1
)

// ErrNoToken means enrollment is needed but no token is configured.
var ErrNoToken = errors.New("no enrollment token: set token_file in the config or " + EnvEnrollToken)

// Duration is a time.Duration written as "30s", "5m" in YAML.
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (like 30s or 5m)", n.Line, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Config is the agent's configuration file (YAML, /etc/tensorguard/agent.yaml).
// Unknown keys are errors. See Validate for the rules.
type Config struct {
	Version int `yaml:"version"`
	// ServerURL is the control plane, https://host[:port].
	ServerURL string `yaml:"server_url"`
	// CAHash pins the control plane's platform CA for the first contact
	// ("sha256:<hex>", printed by `tgctl token create`); CAFile is the
	// alternative, a PEM file with that CA. After enrollment the CA bundle
	// from the control plane (kept in the state file) is trusted instead.
	CAHash string `yaml:"ca_hash,omitempty"`
	CAFile string `yaml:"ca_file,omitempty"`
	// Token is the one-time enrollment token inline (development only);
	// prefer TokenFile, or the TG_ENROLL_TOKEN environment variable.
	Token     string `yaml:"token,omitempty"`
	TokenFile string `yaml:"token_file,omitempty"`

	StatePath  string            `yaml:"state_path"`
	TPM        TPMConfig         `yaml:"tpm"`
	DeviceType string            `yaml:"device_type"`
	Labels     map[string]string `yaml:"labels,omitempty"`
	MQTT       MQTTConfig        `yaml:"mqtt"`
	// RenewFraction is the fraction of a certificate's lifetime after
	// which it is renewed (default 2/3).
	RenewFraction   float64         `yaml:"renew_fraction"`
	Outbox          OutboxConfig    `yaml:"outbox"`
	Install         InstallConfig   `yaml:"install"`
	Inference       InferenceConfig `yaml:"inference"`
	Metrics         MetricsConfig   `yaml:"metrics"`
	Telemetry       TelemetryConfig `yaml:"telemetry"`
	Log             LogConfig       `yaml:"log"`
	ShutdownTimeout Duration        `yaml:"shutdown_timeout"`

	// Environment is TG_ENVIRONMENT, read by LoadConfig; "production"
	// refuses insecure settings.
	Environment string `yaml:"-"`
}

// TPMConfig selects the TPM: at most one of Device (a kernel resource
// manager, default /dev/tpmrm0), SWTPM (an swtpm command socket,
// "host:port" or "unix:///path"), Simulator (the in-process simulator,
// development only) and None.
type TPMConfig struct {
	Device    string `yaml:"device,omitempty"`
	SWTPM     string `yaml:"swtpm,omitempty"`
	Simulator bool   `yaml:"simulator,omitempty"`
	// None runs the device without a TPM: the TLS key is an ECDSA P-256
	// software key kept in the state file, and the control plane records
	// the device as tpm_kind "none". It is an honest, weaker mode — the key
	// can be copied with the state file, and the device can never be
	// attested — so it is never chosen implicitly (a missing TPM is an
	// error, not a fallback) and the fleet's policy must allow it
	// (allow_no_tpm). It is allowed in production because it is explicit.
	None bool `yaml:"none,omitempty"`
	// SimulatorSeed derives the simulator's hierarchy seeds from a number,
	// so its keys (and therefore an enrolled identity) survive an agent
	// restart. Insecure by construction; development only.
	SimulatorSeed *int64 `yaml:"simulator_seed,omitempty"`
}

// MQTTConfig overrides the broker.
type MQTTConfig struct {
	// URL defaults to mqtts://<server host>:8883.
	URL       string   `yaml:"url,omitempty"`
	KeepAlive Duration `yaml:"keepalive,omitempty"`
}

// OutboxConfig bounds the durable outbox (package outbox's full policy).
type OutboxConfig struct {
	MaxEntries int   `yaml:"max_entries"`
	MaxBytes   int64 `yaml:"max_bytes"`
}

// InstallConfig configures the install pipeline (package install,
// docs/packages.md).
type InstallConfig struct {
	// Runtime is which inference backends run installed models: "auto"
	// (the default: TensorRT where the agent was built with it and a GPU
	// answers, and ONNX Runtime), "onnxruntime", "tensorrt", or "none"
	// (this device runs no models; install jobs fail with ACTIVATION).
	Runtime string `yaml:"runtime"`
	// ONNXRuntimeLibrary is the path of libonnxruntime.so.1 (ONNX Runtime
	// 1.24.x). Empty: $TG_ONNXRUNTIME_LIB, else the library the .deb
	// installs (onnxruntime.InstalledLibrary), else the development cache. It
	// is loaded at the first install, so a missing library fails installs
	// (ACTIVATION, naming it), not the agent.
	ONNXRuntimeLibrary string `yaml:"onnxruntime_library,omitempty"`
	// ONNXRuntimeThreads is ONNX Runtime's intra-op thread count (0: one
	// per core).
	ONNXRuntimeThreads int `yaml:"onnxruntime_threads,omitempty"`
	// PlanCacheBytes bounds the encrypted cache of built TensorRT engine
	// plans (0: 4 GiB), kept in $CACHE_DIRECTORY/plans (systemd's
	// CacheDirectory), else in plans/ beside the state file.
	PlanCacheBytes int64 `yaml:"plan_cache_bytes,omitempty"`
	// MaxPackageBytes bounds a package download; MaxModelBytes the
	// plaintext a model may occupy in memory (it never goes to disk).
	MaxPackageBytes int64 `yaml:"max_package_bytes"`
	MaxModelBytes   int64 `yaml:"max_model_bytes"`
	// DownloadAttempts is how many consecutive failed requests without
	// progress end a download (and a key-grant request) with DOWNLOAD.
	DownloadAttempts int `yaml:"download_attempts"`
}

// Install runtimes.
const (
	RuntimeAuto     = "auto"
	RuntimeONNX     = "onnxruntime"
	RuntimeTensorRT = "tensorrt"
	RuntimeNone     = "none"
)

// InferenceConfig configures the local inference API (docs/inference.md):
// the Open Inference Protocol (KServe v2) on a Unix socket.
type InferenceConfig struct {
	// Socket is the Unix socket's path; "off" disables the API. Default:
	// inference.sock in $RUNTIME_DIRECTORY (systemd's RuntimeDirectory,
	// /run/tensorguard), else beside the state file.
	Socket string `yaml:"socket,omitempty"`
	// SocketGroup owns the socket (mode 0660): members of this group may
	// run inferences. Empty: the agent's own group.
	SocketGroup string `yaml:"socket_group,omitempty"`
	// Listen optionally serves the API on a loopback TCP address too
	// (127.0.0.1:8001); other addresses are refused.
	Listen string `yaml:"listen,omitempty"`
	// MaxBodyBytes bounds a request body (413 beyond).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
}

// InferenceSocketOff disables the inference API.
const InferenceSocketOff = "off"

// SocketPath returns the inference socket's path ("" when disabled).
func (c *Config) SocketPath() string {
	switch s := c.Inference.Socket; {
	case s == InferenceSocketOff:
		return ""
	case s != "":
		return s
	}
	if dir := os.Getenv("RUNTIME_DIRECTORY"); dir != "" {
		dir, _, _ = strings.Cut(dir, ":") // systemd lists several with ':'
		return filepath.Join(dir, "inference.sock")
	}
	return filepath.Join(filepath.Dir(c.StatePath), "inference.sock")
}

// PlanCacheDir is where built TensorRT plans are cached, encrypted.
func (c *Config) PlanCacheDir() string {
	if dir := os.Getenv("CACHE_DIRECTORY"); dir != "" {
		dir, _, _ = strings.Cut(dir, ":")
		return filepath.Join(dir, "plans")
	}
	return filepath.Join(filepath.Dir(c.StatePath), "plans")
}

// MetricsConfig configures the Prometheus endpoint.
type MetricsConfig struct {
	// Listen is the loopback address serving /metrics (127.0.0.1:9464);
	// empty disables it. Other addresses are refused: the endpoint has no
	// authentication.
	Listen string `yaml:"listen,omitempty"`
}

// TelemetryConfig sets the heartbeat.
type TelemetryConfig struct {
	Interval Duration `yaml:"interval"`
}

// LogConfig sets logging.
type LogConfig struct {
	Level  string `yaml:"level"`  // debug, info, warn, error
	Format string `yaml:"format"` // text or json
}

// DefaultConfig returns a configuration with every default set; the TPM is
// left unselected (Validate and the agent treat that as /dev/tpmrm0).
func DefaultConfig() *Config {
	return &Config{
		Version:         configVersion,
		StatePath:       DefaultStatePath,
		DeviceType:      DetectDeviceType(),
		RenewFraction:   2.0 / 3.0,
		Outbox:          OutboxConfig{MaxEntries: 10000, MaxBytes: 8 << 20},
		Telemetry:       TelemetryConfig{Interval: Duration(60 * time.Second)},
		Log:             LogConfig{Level: "info", Format: "text"},
		ShutdownTimeout: Duration(10 * time.Second),
		MQTT:            MQTTConfig{KeepAlive: Duration(30 * time.Second)},
		Inference:       InferenceConfig{MaxBodyBytes: 64 << 20},
		Install:         InstallConfig{Runtime: RuntimeAuto, MaxPackageBytes: 4 << 30, MaxModelBytes: 1 << 30, DownloadAttempts: 10},
	}
}

// LoadConfig reads the file at path over the defaults and records
// TG_ENVIRONMENT. It does not validate: call Validate.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// ParseConfig decodes YAML over the defaults; unknown keys, a second
// document and a missing version are errors. TG_ENVIRONMENT is read here.
func ParseConfig(data []byte) (*Config, error) {
	cfg := DefaultConfig()
	cfg.Version = 0 // must be stated by the file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty config: at least version: 1 and server_url are needed")
		}
		return nil, fmt.Errorf("parse: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, errors.New("parse: more than one YAML document")
	}
	cfg.Environment = os.Getenv(EnvEnvironment)
	return cfg, nil
}

// Production reports whether TG_ENVIRONMENT is "production".
func (c *Config) Production() bool { return strings.EqualFold(c.Environment, "production") }

var (
	deviceTypeRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	labelKeyRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9._/-]{0,62})$`)
)

const maxLabelValue = 256

// Validate checks every key and returns all problems at once, each naming
// its key. It reads no files.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	prod := c.Production()

	switch c.Version {
	case configVersion:
	case 0:
		bad("version", "missing; this agent reads version: %d", configVersion)
	default:
		bad("version", "%d is not supported; this agent reads version: %d", c.Version, configVersion)
	}

	if c.ServerURL == "" {
		bad("server_url", "required (https://host:port of the control plane)")
	} else if u, err := url.Parse(c.ServerURL); err != nil || u.Scheme != "https" || u.Host == "" {
		bad("server_url", "%q must be an https:// URL with a host", c.ServerURL)
	}

	switch {
	case c.CAHash != "" && c.CAFile != "":
		bad("ca_hash", "set either ca_hash or ca_file, not both")
	case c.CAHash != "":
		if _, err := enroll.ParsePin(c.CAHash); err != nil {
			bad("ca_hash", "%q is not sha256:<64 hex digits>", c.CAHash)
		}
	case c.CAFile != "":
		if !filepath.IsAbs(c.CAFile) {
			bad("ca_file", "%q must be an absolute path", c.CAFile)
		}
	case prod:
		bad("ca_hash", "required when %s=production (or ca_file): the first contact must be pinned", EnvEnvironment)
	}

	if c.Token != "" && c.TokenFile != "" {
		bad("token", "set either token or token_file, not both")
	}
	if c.Token != "" && prod {
		bad("token", "an inline token is refused when %s=production; use token_file or %s", EnvEnvironment, EnvEnrollToken)
	}
	if c.TokenFile != "" && !filepath.IsAbs(c.TokenFile) {
		bad("token_file", "%q must be an absolute path", c.TokenFile)
	}

	if c.StatePath == "" {
		bad("state_path", "required")
	}

	n := 0
	for _, set := range []bool{c.TPM.Device != "", c.TPM.SWTPM != "", c.TPM.Simulator, c.TPM.None} {
		if set {
			n++
		}
	}
	if n > 1 {
		bad("tpm", "choose one of device, swtpm, simulator and none")
	}
	if c.TPM.Simulator && prod {
		bad("tpm.simulator", "the simulated TPM is refused when %s=production", EnvEnvironment)
	}
	if c.TPM.SimulatorSeed != nil && !c.TPM.Simulator {
		bad("tpm.simulator_seed", "only meaningful with simulator: true")
	}

	if !deviceTypeRE.MatchString(c.DeviceType) {
		bad("device_type", "%q must match %s", c.DeviceType, deviceTypeRE)
	}
	for k, v := range c.Labels {
		if !labelKeyRE.MatchString(k) {
			bad("labels", "key %q must match %s", k, labelKeyRE)
		}
		if len(v) > maxLabelValue {
			bad("labels", "value of %q is longer than %d bytes", k, maxLabelValue)
		}
	}

	if c.MQTT.URL != "" {
		u, err := url.Parse(c.MQTT.URL)
		switch {
		case err != nil || u.Host == "" || u.Port() == "":
			bad("mqtt.url", "%q must be scheme://host:port", c.MQTT.URL)
		case u.Scheme == "mqtts" || u.Scheme == "ssl" || u.Scheme == "tls":
		case u.Scheme == "tcp" || u.Scheme == "mqtt":
			if prod {
				bad("mqtt.url", "plain MQTT (%s) is refused when %s=production; use mqtts://", u.Scheme, EnvEnvironment)
			}
		default:
			bad("mqtt.url", "unsupported scheme %q (mqtts, ssl, tls; tcp or mqtt for development)", u.Scheme)
		}
	}
	if c.MQTT.KeepAlive.D() < 0 || (c.MQTT.KeepAlive.D() > 0 && c.MQTT.KeepAlive.D() < time.Second) {
		bad("mqtt.keepalive", "%s must be at least 1s", c.MQTT.KeepAlive.D())
	}

	if !(c.RenewFraction > 0 && c.RenewFraction < 1) {
		bad("renew_fraction", "%v must be between 0 and 1 (exclusive)", c.RenewFraction)
	}
	if c.Outbox.MaxEntries < 1 {
		bad("outbox.max_entries", "%d must be at least 1", c.Outbox.MaxEntries)
	}
	if c.Outbox.MaxBytes < 1024 {
		bad("outbox.max_bytes", "%d must be at least 1024", c.Outbox.MaxBytes)
	}
	if c.Telemetry.Interval.D() < time.Second {
		bad("telemetry.interval", "%s must be at least 1s", c.Telemetry.Interval.D())
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		bad("log.level", "%v", err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		bad("log.format", "%q must be text or json", c.Log.Format)
	}
	switch c.Install.Runtime {
	case RuntimeAuto, RuntimeONNX, RuntimeTensorRT, RuntimeNone:
	default:
		bad("install.runtime", "%q must be %s, %s, %s or %s", c.Install.Runtime, RuntimeAuto, RuntimeONNX, RuntimeTensorRT, RuntimeNone)
	}
	if s := c.Inference.Socket; s != "" && s != InferenceSocketOff && !filepath.IsAbs(s) {
		bad("inference.socket", "%q must be an absolute path (or %s)", s, InferenceSocketOff)
	}
	if l := c.Inference.Listen; l != "" {
		if err := inferapi.CheckLoopback(l); err != nil {
			bad("inference.listen", "%v", err)
		}
	}
	if c.Inference.MaxBodyBytes < 1024 {
		bad("inference.max_body_bytes", "%d must be at least 1024", c.Inference.MaxBodyBytes)
	}
	if l := c.Metrics.Listen; l != "" {
		if err := inferapi.CheckLoopback(l); err != nil {
			bad("metrics.listen", "%v", err)
		}
	}
	if l := c.Install.ONNXRuntimeLibrary; l != "" && !filepath.IsAbs(l) {
		bad("install.onnxruntime_library", "%q must be an absolute path", l)
	}
	if c.Install.ONNXRuntimeThreads < 0 {
		bad("install.onnxruntime_threads", "%d must not be negative", c.Install.ONNXRuntimeThreads)
	}
	if c.Install.PlanCacheBytes < 0 {
		bad("install.plan_cache_bytes", "%d must not be negative", c.Install.PlanCacheBytes)
	}
	if c.Install.MaxPackageBytes < 1<<20 {
		bad("install.max_package_bytes", "%d must be at least 1 MiB", c.Install.MaxPackageBytes)
	}
	if c.Install.MaxModelBytes < 1<<20 {
		bad("install.max_model_bytes", "%d must be at least 1 MiB", c.Install.MaxModelBytes)
	}
	if c.Install.DownloadAttempts < 1 {
		bad("install.download_attempts", "%d must be at least 1", c.Install.DownloadAttempts)
	}
	if c.ShutdownTimeout.D() <= 0 {
		bad("shutdown_timeout", "must be positive")
	}
	return errors.Join(errs...)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil || strings.ContainsAny(s, "+-") {
		return 0, fmt.Errorf("%q must be debug, info, warn or error", s)
	}
	return l, nil
}

// LogLevel returns the configured level (info if invalid).
func (c *Config) LogLevel() slog.Level {
	l, err := parseLevel(c.Log.Level)
	if err != nil {
		return slog.LevelInfo
	}
	return l
}

// TPMDevice returns the kernel device path in use when neither swtpm nor
// the simulator is selected.
func (c *Config) TPMDevice() string {
	if c.TPM.Device == "" {
		return DefaultTPMDevice
	}
	return c.TPM.Device
}

// EnrollmentToken returns the token from token_file, token or
// TG_ENROLL_TOKEN, in that order, or ErrNoToken. It is read only when the
// device must enroll, so the file may be removed afterwards.
func (c *Config) EnrollmentToken() (string, error) {
	switch {
	case c.TokenFile != "":
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return "", fmt.Errorf("token_file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("token_file %s is empty", c.TokenFile)
		}
		return tok, nil
	case c.Token != "":
		return c.Token, nil
	}
	if tok := strings.TrimSpace(os.Getenv(EnvEnrollToken)); tok != "" {
		return tok, nil
	}
	return "", ErrNoToken
}

// BrokerURL returns mqtt.url, or mqtts://<server host>:8883.
func (c *Config) BrokerURL() string {
	if c.MQTT.URL != "" {
		return c.MQTT.URL
	}
	u, err := url.Parse(c.ServerURL)
	if err != nil || u.Hostname() == "" {
		return ""
	}
	host := u.Hostname()
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return "mqtts://" + host + ":" + DefaultBrokerPort
}

// reloadable lists the keys a SIGHUP may change in a running agent. Every
// other key needs a restart (it is baked into an open file, a TLS config or
// a connection), and token keys do not matter once enrolled.
var reloadable = map[string]bool{
	"labels": true, "telemetry.interval": true, "log.level": true,
	"token": true, "token_file": true,
}

// restartKeys returns the keys whose change a running agent cannot apply.
func restartKeys(old, next *Config) []string {
	var out []string
	diffStruct("", reflect.ValueOf(*old), reflect.ValueOf(*next), &out)
	return out
}

func diffStruct(prefix string, a, b reflect.Value, out *[]string) {
	t := a.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || name == "" {
			continue
		}
		key := prefix + name
		if reloadable[key] {
			continue
		}
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[Duration]() {
			diffStruct(key+".", a.Field(i), b.Field(i), out)
			continue
		}
		if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			*out = append(*out, key)
		}
	}
}

// DetectDeviceType names the hardware: "jetson-orin" or "jetson" when the
// device tree says NVIDIA Jetson, else "x86-64" or "arm64" (or GOARCH).
func DetectDeviceType() string {
	model, _ := os.ReadFile("/proc/device-tree/model")
	return deviceType(string(model), runtime.GOARCH)
}

func deviceType(model, goarch string) string {
	model = strings.TrimRight(model, "\x00\n ")
	switch {
	case strings.Contains(model, "NVIDIA Jetson") && strings.Contains(model, "Orin"):
		return "jetson-orin"
	case strings.Contains(model, "NVIDIA Jetson"):
		return "jetson"
	case goarch == "amd64":
		return "x86-64"
	}
	return goarch
}
