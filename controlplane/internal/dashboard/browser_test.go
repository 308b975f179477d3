package dashboard_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tensorguard/tensorguardflow/controlplane/controlplanetest"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// simDevice is a device record with a certificate of its tenant's CA and an
// mTLS MQTT connection that announces it online, as an agent's does: a
// retained online status, and a Will saying offline.
type simDevice struct {
	dev     store.Device
	mqtt    paho.Client
	session uint64
	h       *controlplanetest.Harness
}

func connectDevice(t *testing.T, h *controlplanetest.Harness, fleet, name string) *simDevice {
	t.Helper()
	dev, cert := h.AddDevice(t, store.Device{FleetID: fleet, Name: name, DeviceType: "jetson-orin"})
	d := &simDevice{dev: dev, session: 1, h: h}
	topic := mqttacl.StatusTopic(h.Tenant, dev.ID)
	will, _ := json.Marshal(wire.Status{Schema: wire.StatusSchema, Device: dev.ID, State: wire.StateOffline, Session: d.session})
	o := paho.NewClientOptions().AddBroker("ssl://"+h.MQTTAddr).SetClientID(dev.ID).
		SetTLSConfig(h.TLSConfig(&cert)).SetCleanSession(true).SetAutoReconnect(false).
		SetConnectTimeout(10*time.Second).SetOrderMatters(false).SetBinaryWill(topic, will, 1, true)
	d.mqtt = paho.NewClient(o)
	if tok := d.mqtt.Connect(); !tok.WaitTimeout(15*time.Second) || tok.Error() != nil {
		t.Fatalf("mqtt connect %s: %v", name, tok.Error())
	}
	t.Cleanup(func() { d.mqtt.Disconnect(100) })
	d.publishStatus(t, wire.StateOnline)
	return d
}

func (d *simDevice) publishStatus(t *testing.T, state string) {
	t.Helper()
	b, _ := json.Marshal(wire.Status{Schema: wire.StatusSchema, Device: d.dev.ID, State: state, Session: d.session, TS: time.Now().UTC()})
	if tok := d.mqtt.Publish(mqttacl.StatusTopic(d.h.Tenant, d.dev.ID), 1, true, b); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("publish %s status of %s: %v", state, d.dev.Name, tok.Error())
	}
}

// goOffline announces offline and disconnects, as a stopping agent does.
func (d *simDevice) goOffline(t *testing.T) {
	t.Helper()
	d.publishStatus(t, wire.StateOffline)
	d.mqtt.Disconnect(250)
}

// waitOnline waits until the control plane has the device online.
func waitOnline(t *testing.T, h *controlplanetest.Harness, id string, online bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		d, err := h.Store().GetDevice(context.Background(), h.Tenant, id)
		if err == nil && d.Online == online {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("device %s online=%v not recorded within 15s (err %v)", id, online, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// artifactsDir is $TG_ARTIFACTS_DIR, else .artifacts/ at the module root.
func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("TG_ARTIFACTS_DIR")
	if dir == "" {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		mod := strings.TrimSpace(string(out))
		if err != nil || mod == "" || mod == os.DevNull {
			t.Fatalf("module root not found (go env GOMOD: %v); set TG_ARTIFACTS_DIR", err)
		}
		dir = filepath.Join(filepath.Dir(mod), ".artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestBrowserDashboard drives headless chromium against a real control
// plane: sign in through the form, see the fleet, its devices and a
// rollout, then watch a device go offline (over MQTT, through the presence
// tracker) and a rollout's wave progress without a reload, and save a
// screenshot.
func TestBrowserDashboard(t *testing.T) {
	needChromium(t)
	h := controlplanetest.Start(t)
	// Started after the control plane, so it is closed before: a browser's
	// idle preconnected sockets would hold up the control plane's drain.
	wd := startChromium(t)
	ctx := context.Background()
	fleet := h.CreateFleet(t, "edge-jetsons", store.FleetPolicy{AllowSimulatedTPM: true})
	d1 := connectDevice(t, h, fleet.ID, "jetson-orin-01")
	d2 := connectDevice(t, h, fleet.ID, "jetson-orin-02")
	d3, err := h.Store().CreateDevice(ctx, h.Tenant, store.Device{FleetID: fleet.ID, Name: `x86 <edge> "03"`, DeviceType: "x86-64", TPMKind: store.TPMNone})
	if err != nil {
		t.Fatal(err)
	}
	waitOnline(t, h, d1.dev.ID, true)
	waitOnline(t, h, d2.dev.ID, true)
	for _, d := range []store.Device{d1.dev, d2.dev} {
		if err := h.Store().PutAttestationState(ctx, h.Tenant, store.AttestationState{DeviceID: d.ID, State: store.VerdictTrusted,
			VerdictAt: time.Now(), PCRDigest: strings.Repeat("ab", 32)}); err != nil {
			t.Fatal(err)
		}
	}
	tn := tenant{ID: h.Tenant, Fleet: fleet}
	r, jobs := seedRollout(t, h.Store(), tn, d1.dev, d2.dev)

	// Sign in through the form.
	wd.navigate(h.BaseURL + "/dashboard/")
	wd.waitFor("the login form", 30*time.Second, func() bool { return strings.HasSuffix(wd.currentURL(), "/dashboard/login") })
	wd.typeInto("#api_key", h.AdminKey)
	wd.click("#sign_in")
	wd.waitFor("the dashboard after login", 30*time.Second, func() bool { return strings.HasSuffix(wd.currentURL(), "/dashboard/") })
	body := wd.text("main")
	for _, want := range []string{"edge-jetsons", "jetson-orin-01", "jetson-orin-02", `x86 <edge> "03"`, "demo-model@1.0.0", "trusted"} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}
	if row := wd.text("#device-" + d1.dev.ID); !strings.Contains(row, "online") {
		t.Errorf("device 01 row %q, want online", row)
	}
	if row := wd.text("#device-" + d3.ID); !strings.Contains(row, "offline") {
		t.Errorf("device 03 row %q, want offline", row)
	}
	// Live: the script connected its event stream.
	wd.waitFor("the live indicator", 30*time.Second, func() bool { return strings.HasPrefix(wd.text("#live"), "live") })
	// A mark that a reload would erase.
	wd.script(`window.tgMark = "no reload"; return null;`, nil)

	d1.goOffline(t)
	wd.waitFor("device 01 to show offline in place", 30*time.Second, func() bool {
		return strings.Contains(wd.text("#device-"+d1.dev.ID), "offline")
	})
	j := jobs[0]
	j.State, j.ReportState = store.JobSucceeded, wire.JobCommitted
	if _, err := h.Store().SaveJob(ctx, j, store.JobNotified, 1); err != nil {
		t.Fatal(err)
	}
	wd.waitFor("the rollout's wave progress in place", 30*time.Second, func() bool {
		return strings.Contains(wd.text("#rollout-"+r.ID), "1 ok")
	})
	var mark string
	wd.script(`return window.tgMark || "";`, &mark)
	if mark != "no reload" {
		t.Fatalf("the page reloaded (mark %q): the update did not come over the event stream", mark)
	}
	if s := wd.text("#summary"); !strings.Contains(s, "1/3") {
		t.Errorf("summary %q, want 1/3 devices online", s)
	}

	png, err := wd.screenshot()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(artifactsDir(t), "dashboard.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))

	// Sign out: the session ends and the page is gone.
	wd.click(".logout button")
	wd.waitFor("the login page after sign-out", 30*time.Second, func() bool { return strings.HasSuffix(wd.currentURL(), "/dashboard/login") })
	wd.navigate(h.BaseURL + "/dashboard/")
	wd.waitFor("the redirect to the login", 30*time.Second, func() bool { return strings.HasSuffix(wd.currentURL(), "/dashboard/login") })
}

// TestControlPlaneShutdownWithOpenStream: the real control plane's
// graceful shutdown (a 5 s drain in controlplanetest) is not held up by an
// open event stream; it would fail with "drain http" if it were.
func TestControlPlaneShutdownWithOpenStream(t *testing.T) {
	h := controlplanetest.Start(t)
	b := &browser{t: t, base: h.PlainURL, cookies: map[string]*http.Cookie{}, c: &http.Client{Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
	page := b.login(h.AdminKey)
	mustContain(t, "page", page, "tenant <strong>"+h.Tenant+"</strong>")
	s := b.events(t)
	patches(t, s.next(t, 10*time.Second))

	start := time.Now()
	h.Restart(t) // fails the test unless the old control plane stopped cleanly
	select {
	case <-s.done:
	case <-time.After(time.Second):
		t.Fatal("the event stream outlived the control plane")
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("stop and start took %s with an open event stream", took)
	}
	// Sessions live in memory: the restarted control plane asks again.
	if resp, _ := b.do("GET", "/dashboard/", nil, nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("page after restart: %d, want a redirect to the login", resp.StatusCode)
	}
}
