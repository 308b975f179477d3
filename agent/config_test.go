package agent

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const pin = "sha256:0000000000000000000000000000000000000000000000000000000000000000"

func TestParseConfig(t *testing.T) {
	base := "version: 1\nserver_url: https://cp.example:8000\nca_hash: " + pin + "\n"
	tests := []struct {
		name    string
		yaml    string
		env     string
		wantErr string // substring naming the key; "" means valid
		check   func(t *testing.T, c *Config)
	}{
		{name: "minimal with defaults", yaml: base, check: func(t *testing.T, c *Config) {
			if c.StatePath != DefaultStatePath || c.TPMDevice() != DefaultTPMDevice || c.RenewFraction != 2.0/3.0 ||
				c.Telemetry.Interval.D() != time.Minute || c.Log.Level != "info" || c.Outbox.MaxEntries != 10000 {
				t.Fatalf("defaults not applied: %+v", c)
			}
			if got := c.BrokerURL(); got != "mqtts://cp.example:8883" {
				t.Fatalf("broker url %q", got)
			}
			if c.DeviceType == "" {
				t.Fatal("no device type detected")
			}
		}},
		{name: "full", yaml: base + `state_path: /tmp/a.db
tpm: {swtpm: "127.0.0.1:2321"}
device_type: jetson-orin
labels: {site: lab-1, "tensorguard.io/role": edge}
mqtt: {url: "mqtts://broker:8883", keepalive: 15s}
renew_fraction: 0.5
outbox: {max_entries: 10, max_bytes: 4096}
telemetry: {interval: 5s}
log: {level: debug, format: json}
shutdown_timeout: 3s
token_file: /etc/tensorguard/token
`, check: func(t *testing.T, c *Config) {
			if c.TPM.SWTPM != "127.0.0.1:2321" || c.Labels["site"] != "lab-1" || c.MQTT.KeepAlive.D() != 15*time.Second ||
				c.Telemetry.Interval.D() != 5*time.Second || c.LogLevel().String() != "DEBUG" || c.BrokerURL() != "mqtts://broker:8883" {
				t.Fatalf("parsed %+v", c)
			}
		}},
		{name: "unknown key", yaml: base + "servr_url: x\n", wantErr: "servr_url"},
		{name: "unknown nested key", yaml: base + "tpm: {devcie: /dev/tpm0}\n", wantErr: "devcie"},
		{name: "missing version", yaml: "server_url: https://cp:8000\n", wantErr: "version: missing"},
		{name: "bad version", yaml: strings.Replace(base, "version: 1", "version: 2", 1), wantErr: "version: 2 is not supported"},
		{name: "empty", yaml: "", wantErr: "empty config"},
		{name: "two documents", yaml: base + "---\nversion: 1\n", wantErr: "more than one"},
		{name: "http server", yaml: "version: 1\nserver_url: http://cp:8000\n", wantErr: "server_url"},
		{name: "missing server", yaml: "version: 1\n", wantErr: "server_url: required"},
		{name: "bad pin", yaml: "version: 1\nserver_url: https://cp\nca_hash: md5:00\n", wantErr: "ca_hash"},
		{name: "pin and file", yaml: base + "ca_file: /etc/ca.pem\n", wantErr: "not both"},
		{name: "two tpms", yaml: base + "tpm: {device: /dev/tpmrm0, simulator: true}\n", wantErr: "tpm: choose one"},
		{name: "seed without simulator", yaml: base + "tpm: {simulator_seed: 3}\n", wantErr: "tpm.simulator_seed"},
		{name: "bad duration", yaml: base + "telemetry: {interval: soon}\n", wantErr: "not a duration"},
		{name: "short interval", yaml: base + "telemetry: {interval: 10ms}\n", wantErr: "telemetry.interval"},
		{name: "renew fraction", yaml: base + "renew_fraction: 1.5\n", wantErr: "renew_fraction"},
		{name: "bad label", yaml: base + "labels: {\"Bad Key\": x}\n", wantErr: "labels"},
		{name: "bad level", yaml: base + "log: {level: loud}\n", wantErr: "log.level"},
		{name: "bad mqtt url", yaml: base + "mqtt: {url: \"ws://b:80\"}\n", wantErr: "mqtt.url"},
		{name: "dev simulator ok", yaml: base + "tpm: {simulator: true, simulator_seed: 1}\ntoken: tok-x\nmqtt: {url: \"tcp://127.0.0.1:1883\"}\n"},
		{name: "production refuses simulator", env: "production", yaml: base + "tpm: {simulator: true}\n", wantErr: "tpm.simulator"},
		{name: "production refuses missing pin", env: "production", yaml: "version: 1\nserver_url: https://cp:8000\n", wantErr: "ca_hash: required"},
		{name: "production refuses inline token", env: "production", yaml: base + "token: tok-x\n", wantErr: "token: an inline token"},
		{name: "production refuses plain mqtt", env: "production", yaml: base + "mqtt: {url: \"tcp://b:1883\"}\n", wantErr: "mqtt.url"},
		{name: "production ok", env: "production", yaml: base + "token_file: /run/token\n"},
		{name: "install defaults", yaml: base, check: func(t *testing.T, c *Config) {
			if c.Install.Runtime != RuntimeAuto || c.Install.MaxPackageBytes != 4<<30 || c.Install.MaxModelBytes != 1<<30 ||
				c.Install.DownloadAttempts != 10 || c.Install.ONNXRuntimeLibrary != "" {
				t.Fatalf("install %+v", c.Install)
			}
		}},
		{name: "install", yaml: base + "install: {runtime: onnxruntime, onnxruntime_library: /usr/lib/tensorguard/libonnxruntime.so.1, onnxruntime_threads: 2, max_package_bytes: 1073741824, max_model_bytes: 268435456, download_attempts: 3}\n",
			check: func(t *testing.T, c *Config) {
				if c.Install.ONNXRuntimeLibrary != "/usr/lib/tensorguard/libonnxruntime.so.1" || c.Install.ONNXRuntimeThreads != 2 ||
					c.Install.MaxPackageBytes != 1<<30 || c.Install.MaxModelBytes != 256<<20 || c.Install.DownloadAttempts != 3 {
					t.Fatalf("install %+v", c.Install)
				}
			}},
		{name: "install runtime none", yaml: base + "install: {runtime: none}\n"},
		{name: "install runtime tensorrt", yaml: base + "install: {runtime: tensorrt}\n"},
		{name: "inference", yaml: base + "inference: {socket: /run/tg/i.sock, socket_group: video, listen: \"127.0.0.1:8001\", max_body_bytes: 4096}\nmetrics: {listen: \"[::1]:9464\"}\n",
			check: func(t *testing.T, c *Config) {
				if c.SocketPath() != "/run/tg/i.sock" || c.Inference.SocketGroup != "video" || c.Inference.Listen != "127.0.0.1:8001" ||
					c.Inference.MaxBodyBytes != 4096 || c.Metrics.Listen != "[::1]:9464" {
					t.Fatalf("inference %+v metrics %+v", c.Inference, c.Metrics)
				}
			}},
		{name: "inference off", yaml: base + "inference: {socket: \"off\"}\n", check: func(t *testing.T, c *Config) {
			if c.SocketPath() != "" {
				t.Fatalf("socket %q, want none", c.SocketPath())
			}
		}},
		{name: "inference socket default", yaml: base + "state_path: /var/lib/tg/agent.db\n", check: func(t *testing.T, c *Config) {
			if c.SocketPath() != "/var/lib/tg/inference.sock" && os.Getenv("RUNTIME_DIRECTORY") == "" {
				t.Fatalf("socket %q", c.SocketPath())
			}
		}},
		{name: "relative socket", yaml: base + "inference: {socket: i.sock}\n", wantErr: "inference.socket"},
		{name: "public inference listen", yaml: base + "inference: {listen: \"0.0.0.0:8001\"}\n", wantErr: "inference.listen"},
		{name: "public metrics listen", yaml: base + "metrics: {listen: \":9464\"}\n", wantErr: "metrics.listen"},
		{name: "tiny body limit", yaml: base + "inference: {max_body_bytes: 10}\n", wantErr: "inference.max_body_bytes"},
		{name: "unknown install runtime", yaml: base + "install: {runtime: tensorflow}\n", wantErr: "install.runtime"},
		{name: "relative onnxruntime library", yaml: base + "install: {onnxruntime_library: lib/libonnxruntime.so.1}\n", wantErr: "install.onnxruntime_library"},
		{name: "tiny model limit", yaml: base + "install: {max_model_bytes: 1000}\n", wantErr: "install.max_model_bytes"},
		{name: "no download attempts", yaml: base + "install: {download_attempts: -1}\n", wantErr: "install.download_attempts"},
		{name: "no tpm", yaml: base + "tpm: {none: true}\n", check: func(t *testing.T, c *Config) {
			if !c.TPM.None || c.TPM.Simulator || c.TPM.SWTPM != "" || c.TPM.Device != "" {
				t.Fatalf("tpm %+v", c.TPM)
			}
		}},
		{name: "no tpm and a device", yaml: base + "tpm: {none: true, device: /dev/tpmrm0}\n", wantErr: "tpm: choose one of device, swtpm, simulator and none"},
		{name: "no tpm and swtpm", yaml: base + "tpm: {none: true, swtpm: \"127.0.0.1:2321\"}\n", wantErr: "tpm: choose one"},
		{name: "no tpm and the simulator", yaml: base + "tpm: {none: true, simulator: true}\n", wantErr: "tpm: choose one"},
		{name: "no tpm with a simulator seed", yaml: base + "tpm: {none: true, simulator_seed: 3}\n", wantErr: "tpm.simulator_seed"},
		{name: "no tpm not a bool", yaml: base + "tpm: {none: maybe}\n", wantErr: "maybe"},
		{name: "production allows an explicit no tpm", env: "production", yaml: base + "token_file: /run/token\ntpm: {none: true}\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvEnvironment, tc.env)
			c, err := ParseConfig([]byte(tc.yaml))
			if err == nil {
				err = c.Validate()
			}
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if tc.check != nil {
					tc.check(t, c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	c := DefaultConfig()
	c.ServerURL = "ftp://x"
	c.RenewFraction = 0
	c.Log.Format = "xml"
	err := c.Validate()
	for _, key := range []string{"server_url", "renew_fraction", "log.format"} {
		if err == nil || !strings.Contains(err.Error(), key+":") {
			t.Errorf("error %v does not name %s", err, key)
		}
	}
}

func TestEnrollmentToken(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("tok-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvEnrollToken, "tok-env")
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{TokenFile: file, Token: "tok-inline"}, "tok-file"},
		{Config{Token: "tok-inline"}, "tok-inline"},
		{Config{}, "tok-env"},
	} {
		if got, err := tc.cfg.EnrollmentToken(); err != nil || got != tc.want {
			t.Errorf("%+v: %q %v, want %q", tc.cfg, got, err, tc.want)
		}
	}
	t.Setenv(EnvEnrollToken, "")
	if _, err := (&Config{}).EnrollmentToken(); err != ErrNoToken {
		t.Errorf("no token: %v", err)
	}
	if _, err := (&Config{TokenFile: filepath.Join(dir, "missing")}).EnrollmentToken(); err == nil {
		t.Error("missing token file accepted")
	}
}

func TestRestartKeys(t *testing.T) {
	old := DefaultConfig()
	old.ServerURL = "https://cp:8000"
	next := *old
	next.Labels = map[string]string{"a": "b"}
	next.Telemetry.Interval = Duration(time.Hour)
	next.Log.Level = "debug"
	if keys := restartKeys(old, &next); len(keys) != 0 {
		t.Fatalf("safe changes need a restart: %v", keys)
	}
	next.StatePath = "/elsewhere.db"
	next.TPM.Simulator = true
	next.MQTT.KeepAlive = Duration(time.Second)
	keys := restartKeys(old, &next)
	slices.Sort(keys)
	if want := []string{"mqtt.keepalive", "state_path", "tpm.simulator"}; !slices.Equal(keys, want) {
		t.Fatalf("restart keys %v, want %v", keys, want)
	}
}

func TestDeviceType(t *testing.T) {
	for _, tc := range []struct{ model, arch, want string }{
		{"NVIDIA Jetson AGX Orin Developer Kit\x00", "arm64", "jetson-orin"},
		{"NVIDIA Jetson Xavier NX\x00", "arm64", "jetson"},
		{"Raspberry Pi 4\x00", "arm64", "arm64"},
		{"", "amd64", "x86-64"},
		{"", "riscv64", "riscv64"},
	} {
		if got := deviceType(tc.model, tc.arch); got != tc.want {
			t.Errorf("deviceType(%q, %s) = %q, want %q", tc.model, tc.arch, got, tc.want)
		}
	}
}
