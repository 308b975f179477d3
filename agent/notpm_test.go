package agent_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/agent"
	"github.com/tensorguard/tensorguardflow/agent/internal/enroll"
	"github.com/tensorguard/tensorguardflow/agent/internal/enroll/enrolltest"
	"github.com/tensorguard/tensorguardflow/agent/internal/presence"
	"github.com/tensorguard/tensorguardflow/agent/internal/presence/presencetest"
	"github.com/tensorguard/tensorguardflow/agent/internal/state"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// logBuffer keeps everything an agent logged (and passes it to t.Log), so
// a test can assert what was never logged.
type logBuffer struct {
	t  *testing.T
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *logBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.b.Write(p)
	w.mu.Unlock()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (w *logBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func noTPMConfig(t *testing.T, cp *enrolltest.ControlPlane, brokerURL string) *agent.Config {
	cfg := testConfig(t, cp, brokerURL)
	cfg.TPM = agent.TPMConfig{None: true}
	return cfg
}

// storedSoftwareKey reads the software TLS key from a stopped agent's
// state file.
func storedSoftwareKey(t *testing.T, path string) *ecdsa.PrivateKey {
	t.Helper()
	db, err := state.Open(path, state.Options{ReadOnly: true, LockTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	der, err := db.Get("identity", "software_tls_key")
	if err != nil {
		t.Fatalf("no software key in the state: %v", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*ecdsa.PrivateKey)
}

// TestNoTPMEnrollRenewRestart: with tpm: {none: true} the agent opens no
// TPM, enrolls with a software key in one request (201, no challenge, no
// activation), is recorded as tpm_kind none, comes online over mTLS MQTT,
// renews with the same key, and after a restart is the same device without
// a second enrollment. The key is in the state file and never in the log.
func TestNoTPMEnrollRenewRestart(t *testing.T) {
	cp := enrolltest.Start(t, enrolltest.Options{CertTTL: 30 * time.Second, AllowNoTPM: true})
	cp.AddToken("tok-1", time.Now().Add(time.Hour))
	broker := startTLSBroker(t, cp)
	obs := presencetest.Observe(t, broker.plainURL, "tg/v1/"+cp.Tenant()+"/#")
	cfg := noTPMConfig(t, cp, broker.tlsURL)
	logs := &logBuffer{t: t}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	noTPM := agent.WithTPMOpener(func(*agent.Config) (*tpmdev.Device, error) {
		return nil, errors.New("the TPM must not be opened with tpm.none")
	})

	runOnce := func() *running {
		t.Helper()
		a, err := agent.New(cfg, logger, agent.WithNotifier(&notifier{}), agent.WithRetry(100*time.Millisecond, time.Second), noTPM)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		r := &running{cancel: cancel, done: make(chan error, 1)}
		go func() { r.done <- a.Run(ctx) }()
		t.Cleanup(func() { r.stop(t) })
		return r
	}

	run1 := runOnce()
	msgs := obs.WaitFor(t, 20*time.Second, "online status", func(m []presencetest.Received) bool {
		for _, s := range statuses(m) {
			if s.State == presence.StateOnline {
				return true
			}
		}
		return false
	})
	device := statuses(msgs)[0].Device
	if devs := cp.Devices(); len(devs) != 1 || devs[0] != device {
		t.Fatalf("online as %q, control plane has %v", device, devs)
	}
	if k := cp.TPMKind(device); k != wire.TPMKindNone {
		t.Fatalf("control plane recorded tpm kind %q, want none", k)
	}
	if cp.Calls("enroll") != 1 || cp.Calls("activate") != 0 {
		t.Fatalf("enroll called %d, activate %d times; want 1 and 0", cp.Calls("enroll"), cp.Calls("activate"))
	}
	// Renewal at 10% of 30 s, for the same key (the fake refuses another).
	waitFor(t, 20*time.Second, "certificate renewal", func() bool { return cp.Calls("renew") >= 1 })
	obs.WaitFor(t, 10*time.Second, "heartbeat after renewal", func(m []presencetest.Received) bool {
		hb := heartbeats(m)
		return len(hb) > 0 && hb[len(hb)-1].Renewals >= 1
	})
	run1.stop(t)
	msgs = obs.WaitFor(t, 10*time.Second, "offline status", func(m []presencetest.Received) bool {
		s := statuses(m)
		return len(s) > 0 && s[len(s)-1].State == presence.StateOffline
	})
	lastSession := statuses(msgs)[len(statuses(msgs))-1].Session
	key := storedSoftwareKey(t, cfg.StatePath)
	st, err := agent.ReadStatus(cfg)
	if err != nil || st.DeviceID != device || st.TPMKind != "none" {
		t.Fatalf("status after stop: %+v %v", st, err)
	}

	run2 := runOnce()
	obs.WaitFor(t, 20*time.Second, "online after restart", func(m []presencetest.Received) bool {
		s := statuses(m)
		return len(s) > 0 && s[len(s)-1].State == presence.StateOnline && s[len(s)-1].Session > lastSession
	})
	if s := statuses(obs.Messages()); s[len(s)-1].Device != device {
		t.Fatalf("restarted as %s, was %s", s[len(s)-1].Device, device)
	}
	if cp.Calls("enroll") != 1 {
		t.Fatalf("enroll called %d times after a restart; want 1", cp.Calls("enroll"))
	}
	run2.stop(t)
	if again := storedSoftwareKey(t, cfg.StatePath); !again.Equal(key) {
		t.Fatal("the software key changed across a restart")
	}

	der, _ := x509.MarshalPKCS8PrivateKey(key)
	raw, err := key.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	secrets := []string{
		base64.StdEncoding.EncodeToString(der), hex.EncodeToString(der),
		base64.StdEncoding.EncodeToString(raw), hex.EncodeToString(raw), new(big.Int).SetBytes(raw).String(),
	}
	out := logs.String()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Fatal("the software key appears in the log")
		}
	}
	if !strings.Contains(out, "tpm=none") {
		t.Fatal("the log does not say the device enrolls without a TPM")
	}
}

// TestNoTPMRefusedByFleet: a fleet that does not allow devices without a
// TPM refuses enrollment permanently, and the error says what to change.
func TestNoTPMRefusedByFleet(t *testing.T) {
	cp := enrolltest.Start(t, enrolltest.Options{})
	cp.AddToken("tok-1", time.Now().Add(time.Hour))
	cfg := noTPMConfig(t, cp, "mqtts://127.0.0.1:1")
	a, err := agent.New(cfg, slog.New(slog.NewTextHandler(testWriter{t}, nil)), agent.WithNotifier(&notifier{}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, _, err = a.Enroll(ctx)
	var ee *agent.EnrollError
	if !errors.As(err, &ee) || !errors.Is(err, enroll.ErrRefused) {
		t.Fatalf("Enroll into a fleet without allow_no_tpm: %v", err)
	}
	t.Log(err)
	for _, want := range []string{"without a TPM", "does not allow devices without a TPM", "--allow-no-tpm"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "TPM evidence") {
		t.Errorf("error %q talks about TPM evidence the device never sent", err)
	}
	if cp.Calls("enroll") != 1 || len(cp.Devices()) != 0 {
		t.Fatalf("enroll calls %d, devices %v: a refusal is not retried and enrolls nothing", cp.Calls("enroll"), cp.Devices())
	}
}

// TestNoTPMStateSwitch: an identity is bound to how the device enrolled.
// Switching an enrolled no-TPM device to a TPM, or a TPM device to none, is
// ErrKeyMismatch naming both kinds, never a silent new identity.
func TestNoTPMStateSwitch(t *testing.T) {
	cp := enrolltest.Start(t, enrolltest.Options{AllowNoTPM: true})
	cp.AddToken("tok-1", time.Now().Add(time.Hour))
	cp.AddToken("tok-2", time.Now().Add(time.Hour))
	logger := slog.New(slog.NewTextHandler(testWriter{t}, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	enrollWith := func(cfg *agent.Config) error {
		t.Helper()
		a, err := agent.New(cfg, logger, agent.WithNotifier(&notifier{}))
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = a.Enroll(ctx)
		return err
	}

	none := noTPMConfig(t, cp, "mqtts://127.0.0.1:1")
	if err := enrollWith(none); err != nil {
		t.Fatal(err)
	}
	sim := *none
	seed := int64(7)
	sim.TPM = agent.TPMConfig{Simulator: true, SimulatorSeed: &seed}
	if err := enrollWith(&sim); !errors.Is(err, agent.ErrKeyMismatch) || !strings.Contains(err.Error(), "enrolled with tpm kind none") {
		t.Fatalf("no-TPM identity opened with a TPM: %v", err)
	} else {
		t.Log(err)
	}

	tpm := testConfig(t, cp, "mqtts://127.0.0.1:1")
	tpm.Token = "tok-2"
	if err := enrollWith(tpm); err != nil {
		t.Fatal(err)
	}
	toNone := *tpm
	toNone.TPM = agent.TPMConfig{None: true}
	err := enrollWith(&toNone)
	if !errors.Is(err, agent.ErrKeyMismatch) || !strings.Contains(err.Error(), "enrolled with tpm kind simulated") {
		t.Fatalf("TPM identity opened with tpm.none: %v", err)
	}
	t.Log(err)
	if cp.Calls("enroll") != 2 {
		t.Fatalf("enroll called %d times, want 2", cp.Calls("enroll"))
	}
}
