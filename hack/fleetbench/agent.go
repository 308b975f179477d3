package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// agentResult is the idle agent and its binary.
type agentResult struct {
	Idle window `json:"idle"`
	// RSSGoalRatio is the mean idle RSS over the 30 MiB goal.
	RSSGoalRatio float64 `json:"rss_goal_ratio"`
	// GoFloorRSSMiB is an idle Go program that only waits for a signal:
	// the runtime's own floor, measured in the same run.
	GoFloorRSSMiB float64 `json:"go_floor_rss_mib"`
	Sizes         sizes   `json:"sizes"`
}

// sizes are tg-agent builds in MB (10^6 bytes, as Mender's ~7 MB).
type sizes struct {
	AsBuiltMB  float64 `json:"as_built_mb"`
	StrippedMB float64 `json:"stripped_mb"`
	// NoSim*: agent/tpm.go replaced through `go build -overlay` by a copy
	// without the simulator case, CGO_ENABLED=0 — what a production build
	// would be if the simulator were behind a build tag (it is not: tpm.go
	// imports go-tpm-tools/simulator unconditionally).
	NoSimMB         float64 `json:"nosim_mb"`
	NoSimStrippedMB float64 `json:"nosim_stripped_mb"`
	NoSimError      string  `json:"nosim_error,omitempty"`
	// MenderRatio is the stripped size over Mender's ~7 MB.
	MenderRatio float64  `json:"mender_ratio"`
	Modules     int      `json:"modules"`
	Notable     []string `json:"notable_modules"`
	NoSimCgo    bool     `json:"nosim_needs_cgo"`
	// BySymbolMB attributes the as-built binary's code and read-only data
	// (go tool nm -size, types T and R) to modules: "std" (with the
	// runtime's per-function metadata), "cgo" (the simulator's C, symbols
	// without a package path), or a module path.
	BySymbolMB []moduleSize `json:"by_symbol_mb"`
}

type moduleSize struct {
	Module string  `json:"module"`
	MB     float64 `json:"mb"`
}

type agentStatus struct {
	Running   bool   `json:"running"`
	Connected bool   `json:"connected"`
	DeviceID  string `json:"device_id"`
}

// benchAgentIdle runs the real tg-agent against the control plane with a
// seeded simulator TPM: it enrolls, connects, and is then left alone for
// idle while its RSS and CPU are sampled.
func benchAgentIdle(ctx context.Context, bin, work, serverURL, caHash, mqttAddr, token string, idle time.Duration) (window, string, error) {
	dir := filepath.Join(work, "agent")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return window{}, "", err
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		return window{}, "", err
	}
	cfg := filepath.Join(dir, "agent.yaml")
	// Defaults otherwise (telemetry every 60s, keepalive 30s, log info):
	// the idle agent as shipped.
	yaml := fmt.Sprintf(`version: 1
server_url: https://%s
ca_hash: %s
token_file: %s
state_path: %s
tpm: {simulator: true, simulator_seed: 4242}
mqtt: {url: "mqtts://%s"}
`, strings.TrimPrefix(serverURL, "https://"), caHash, tokenFile, filepath.Join(dir, "state", "agent.db"), mqttAddr)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		return window{}, "", err
	}
	p, err := startProc("tg-agent", filepath.Join(work, "agent.log"),
		[]string{"NOTIFY_SOCKET=", "WATCHDOG_USEC=", "TG_ENVIRONMENT="}, bin, "run", "--config", cfg)
	if err != nil {
		return window{}, "", err
	}
	defer p.stop(15 * time.Second)
	deadline := time.Now().Add(60 * time.Second)
	var st agentStatus
	for {
		// The status file is rewritten at start and with each heartbeat
		// (every 60s), not on connect: when the first heartbeat runs just
		// before the MQTT connection is up, status says "not connected"
		// for a minute. The agent's log line is the other evidence.
		out, err := exec.CommandContext(ctx, bin, "status", "--config", cfg, "-o", "json").Output()
		if err == nil && json.Unmarshal(out, &st) == nil && st.Running && (st.Connected || logHas(p.log, `msg="mqtt connected"`)) {
			break
		}
		if p.exited() {
			return window{}, "", fmt.Errorf("tg-agent exited (%v):\n%s", p.err, p.tail())
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return window{}, "", fmt.Errorf("tg-agent not connected within 60s:\n%s", p.tail())
		}
		time.Sleep(250 * time.Millisecond)
	}
	// Let enrollment's garbage and the first publishes settle.
	time.Sleep(3 * time.Second)
	w, err := sample(p.pid(), idle, ctx.Done())
	if err != nil {
		return window{}, "", err
	}
	if p.exited() {
		return window{}, "", fmt.Errorf("tg-agent exited during the idle window:\n%s", p.tail())
	}
	if err := p.stop(15 * time.Second); err != nil {
		return window{}, "", fmt.Errorf("tg-agent stop: %w", err)
	}
	return w, st.DeviceID, nil
}

func logHas(path, s string) bool {
	b, err := os.ReadFile(path)
	return err == nil && strings.Contains(string(b), s)
}

// goFloor builds and runs a Go program that only waits for SIGTERM and
// returns its RSS.
func goFloor(work string) (float64, error) {
	dir := filepath.Join(work, "floor")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	src := filepath.Join(dir, "floor.go")
	prog := "package main\n\nimport (\n\t\"os\"\n\t\"os/signal\"\n\t\"syscall\"\n)\n\nfunc main() {\n\tc := make(chan os.Signal, 1)\n\tsignal.Notify(c, syscall.SIGTERM)\n\t<-c\n}\n"
	if err := os.WriteFile(src, []byte(prog), 0o644); err != nil {
		return 0, err
	}
	bin := filepath.Join(dir, "floor")
	if out, err := goBuild(nil, "-o", bin, src); err != nil {
		return 0, fmt.Errorf("build floor: %v\n%s", err, out)
	}
	p, err := startProc("floor", filepath.Join(dir, "floor.log"), nil, bin)
	if err != nil {
		return 0, err
	}
	defer p.stop(5 * time.Second)
	time.Sleep(time.Second)
	u, err := readUsage(p.pid())
	return float64(u.rssKiB) / 1024, err
}

func goBuild(env []string, args ...string) ([]byte, error) {
	cmd := exec.Command("go", append([]string{"build"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	return cmd.CombinedOutput()
}

// noSimTPM replaces agent/tpm.go in the no-simulator build. It must keep
// openTPM's signature; if tpm.go changes, the build fails and the size is
// reported as unavailable, with the reason.
const noSimTPM = `package agent

import (
	"errors"

	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
)

func openTPM(c *Config) (*tpmdev.Device, error) {
	switch {
	case c.TPM.Simulator:
		return nil, errors.New("this build has no TPM simulator")
	case c.TPM.SWTPM != "":
		return tpmdev.OpenSWTPM(c.TPM.SWTPM)
	default:
		return tpmdev.OpenDevice(c.TPMDevice())
	}
}
`

// measureSizes builds tg-agent stripped and without the simulator, and
// lists what the as-built binary links.
func measureSizes(root, work, asBuilt string) (sizes, error) {
	var s sizes
	size := func(p string) (float64, error) {
		fi, err := os.Stat(p)
		if err != nil {
			return 0, err
		}
		return float64(fi.Size()) / 1e6, nil
	}
	var err error
	if s.AsBuiltMB, err = size(asBuilt); err != nil {
		return s, err
	}
	dir := filepath.Join(work, "sizes")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return s, err
	}
	pkg := "./agent/cmd/tg-agent"
	stripped := filepath.Join(dir, "tg-agent-stripped")
	if out, err := goBuild(nil, "-trimpath", "-ldflags=-s -w", "-o", stripped, pkg); err != nil {
		return s, fmt.Errorf("build stripped tg-agent: %v\n%s", err, out)
	}
	if s.StrippedMB, err = size(stripped); err != nil {
		return s, err
	}
	s.MenderRatio = s.StrippedMB / 7

	rootAbs, err := filepath.Abs(root)
	if err != nil {
		return s, err
	}
	repl := filepath.Join(dir, "tpm_nosim.go")
	if err := os.WriteFile(repl, []byte(noSimTPM), 0o644); err != nil {
		return s, err
	}
	overlay, _ := json.Marshal(map[string]map[string]string{"Replace": {filepath.Join(rootAbs, "agent", "tpm.go"): repl}})
	ovFile := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(ovFile, overlay, 0o644); err != nil {
		return s, err
	}
	nosim, nosimStripped := filepath.Join(dir, "tg-agent-nosim"), filepath.Join(dir, "tg-agent-nosim-stripped")
	cgo0 := []string{"CGO_ENABLED=0"}
	if out, err := goBuild(cgo0, "-overlay", ovFile, "-o", nosim, pkg); err != nil {
		// Without cgo it may still need cgo elsewhere: try with it.
		if out2, err2 := goBuild(nil, "-overlay", ovFile, "-o", nosim, pkg); err2 != nil {
			s.NoSimError = firstLine(string(out)) + " / " + firstLine(string(out2))
		} else {
			s.NoSimCgo = true
		}
	}
	if s.NoSimError == "" {
		env := cgo0
		if s.NoSimCgo {
			env = nil
		}
		if out, err := goBuild(env, "-overlay", ovFile, "-trimpath", "-ldflags=-s -w", "-o", nosimStripped, pkg); err != nil {
			s.NoSimError = firstLine(string(out))
		} else {
			s.NoSimMB, _ = size(nosim)
			s.NoSimStrippedMB, _ = size(nosimStripped)
		}
	}

	out, err := exec.Command("go", "version", "-m", asBuilt).Output()
	if err != nil {
		return s, fmt.Errorf("go version -m: %w", err)
	}
	var mods []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && (f[0] == "dep" || f[0] == "mod") {
			mods = append(mods, f[1])
		}
		if len(f) >= 2 && f[0] == "dep" {
			s.Modules++
			for _, want := range []string{"go-sev-guest", "go-tdx-guest", "go-configfs-tsm", "confidential-space", "protobuf", "paho", "bbolt", "go-tpm-tools"} {
				if strings.Contains(f[1], want) {
					s.Notable = append(s.Notable, f[1])
				}
			}
		}
	}
	if s.BySymbolMB, err = symbolSizes(asBuilt, mods); err != nil {
		return s, err
	}
	return s, nil
}

// symbolSizes sums go tool nm -size per module (longest module path that
// prefixes the symbol; the rest is std or, without a package path, cgo).
func symbolSizes(bin string, mods []string) ([]moduleSize, error) {
	out, err := exec.Command("go", "tool", "nm", "-size", bin).Output()
	if err != nil {
		return nil, fmt.Errorf("go tool nm: %w", err)
	}
	sort.Slice(mods, func(i, j int) bool { return len(mods[i]) > len(mods[j]) })
	total := map[string]int64{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		// address size type name
		f := strings.Fields(sc.Text())
		// Code and read-only data only: Go's nm reports some BSS (the
		// FIPS DRBG's 32 MiB) as data, which takes no room in the file.
		if len(f) < 4 || !strings.Contains("TtRr", f[2]) {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		name := strings.Join(f[3:], " ")
		owner := "std"
		switch {
		case strings.HasPrefix(name, "_cgo_") || strings.HasPrefix(name, "x_cgo") || !strings.ContainsAny(name, "./"):
			owner = "cgo"
		default:
			for _, m := range mods {
				if strings.HasPrefix(name, m+".") || strings.HasPrefix(name, m+"/") {
					owner = m
					break
				}
			}
		}
		total[owner] += n
	}
	var res []moduleSize
	for m, n := range total {
		res = append(res, moduleSize{Module: m, MB: float64(n) / 1e6})
	}
	sort.Slice(res, func(i, j int) bool { return res[i].MB > res[j].MB })
	return res, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
