package controlplane_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/controlplane/controlplanetest"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// The devices of the rollout tests: each is a store record with a
// certificate from its tenant's CA, an mTLS MQTT connection that takes
// job notifications on cmd/job, and a loop that fetches each notified job
// over mTLS HTTPS and answers it as its behaviour says — as an agent
// would, reduced to the contract of internal/wire/jobs.go.

// behaviour decides what a device does with an install job: the report
// states to publish, in order. Returning nil publishes nothing (the device
// stays silent).
type behaviour func(d *simDevice, j wire.Job) []string

// commits installs and commits.
func commits(*simDevice, wire.Job) []string {
	return []string{wire.JobReceived, wire.JobDownloading, wire.JobKeyGrant, wire.JobInstalling, wire.JobSelfTest, wire.JobCommitted}
}

// failsSelfTest installs, fails its self-test and rolls itself back.
func failsSelfTest(*simDevice, wire.Job) []string {
	return []string{wire.JobReceived, wire.JobDownloading, wire.JobInstalling, wire.JobSelfTest, wire.JobFailed}
}

// silent never answers.
func silent(*simDevice, wire.Job) []string { return nil }

// silentUntil answers only from attempt n on.
func silentUntil(n int) behaviour {
	return func(d *simDevice, j wire.Job) []string {
		if j.Attempt < n {
			return nil
		}
		return commits(d, j)
	}
}

// holds starts the job and waits for release before it commits.
func holds(release <-chan struct{}) behaviour {
	return func(d *simDevice, j wire.Job) []string {
		d.report(j, wire.JobReceived, "")
		d.report(j, wire.JobDownloading, "")
		select {
		case <-release:
		case <-d.done:
			return nil
		}
		return []string{wire.JobInstalling, wire.JobCommitted}
	}
}

type simDevice struct {
	t      *testing.T
	h      *controlplanetest.Harness
	dev    store.Device
	http   *http.Client
	mqtt   paho.Client
	behave behaviour
	inbox  chan string
	done   chan struct{}
	// reanswer: a notification of the same attempt of a finished job is
	// answered with its final state again, as the agent does (set before
	// the first job arrives).
	reanswer bool

	mu        sync.Mutex
	installed [2]string           // name, version active
	notified  []wire.JobNotify    // every notification
	fetched   map[string][]int    // job id → attempts fetched
	cancelled map[string]bool     // job ids answered 410
	finished  map[string]string   // job id → final state reported
	jobs      map[string]wire.Job // last fetch of each job
}

// newSimDevice creates a device of fleet with labels and connects it.
// It has name@version of the package installed (empty: none).
func newSimDevice(t *testing.T, h *controlplanetest.Harness, fleet string, labels map[string]string, installed string, b behaviour) *simDevice {
	t.Helper()
	dev, cert := h.AddDevice(t, store.Device{FleetID: fleet, Name: "sim", DeviceType: "jetson-orin", Labels: labels})
	d := &simDevice{t: t, h: h, dev: dev, behave: b, inbox: make(chan string, 256), done: make(chan struct{}),
		fetched: map[string][]int{}, cancelled: map[string]bool{}, finished: map[string]string{}, jobs: map[string]wire.Job{},
		http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: h.TLSConfig(&cert), DisableKeepAlives: true}}}
	if name, version, ok := strings.Cut(installed, "@"); ok {
		d.installed = [2]string{name, version}
	}
	// Reconnects on its own (a control-plane restart), resubscribes and
	// catches up on the jobs it may have missed, as an agent does.
	d.mqtt = mqttConnect(t, h, cert, dev.ID, func(o *paho.ClientOptions) {
		o.SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).
			SetMaxReconnectInterval(500 * time.Millisecond).
			SetOnConnectHandler(func(c paho.Client) {
				c.Subscribe(mqttacl.CmdTopic(h.Tenant, dev.ID, "job"), 1, d.onNotify)
				go d.catchUp()
			})
	})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		d.loop()
	}()
	t.Cleanup(func() { close(d.done); <-stopped })
	return d
}

func (d *simDevice) onNotify(_ paho.Client, m paho.Message) {
	var n wire.JobNotify
	if err := json.Unmarshal(m.Payload(), &n); err != nil || n.Schema != wire.JobNotifySchema {
		d.t.Errorf("device %s: bad notification %s", d.dev.ID, m.Payload())
		return
	}
	d.mu.Lock()
	d.notified = append(d.notified, n)
	d.mu.Unlock()
	select {
	case d.inbox <- n.JobID:
	default:
	}
}

// catchUp queues the device's open jobs (GET /api/v1/device/jobs).
func (d *simDevice) catchUp() {
	var jobs []wire.Job
	if st, err := d.get("/api/v1/device/jobs", &jobs); err != nil || st != 200 {
		return // the control plane is (re)starting; the next connect catches up
	}
	for _, j := range jobs {
		select {
		case d.inbox <- j.ID:
		default:
		}
	}
}

func (d *simDevice) get(path string, out any) (int, error) {
	resp, err := d.http.Get(d.h.BaseURL + path)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode == 200 && out != nil {
		return 200, json.Unmarshal(raw, out)
	}
	return resp.StatusCode, nil
}

func (d *simDevice) loop() {
	for {
		select {
		case <-d.done:
			return
		case id := <-d.inbox:
			d.handle(id)
		}
	}
}

// handle fetches job id and answers it. A job already finished is
// answered with its final state again under the new attempt (the device
// did the work); a cancelled one is dropped.
func (d *simDevice) handle(id string) {
	var j wire.Job
	st, err := d.get("/api/v1/device/jobs/"+id, &j)
	switch {
	case err != nil:
		return
	case st == http.StatusGone:
		d.mu.Lock()
		d.cancelled[id] = true
		d.mu.Unlock()
		return
	case st != 200:
		d.t.Errorf("device %s: GET job %s: %d", d.dev.ID, id, st)
		return
	}
	if j.Schema != wire.JobSchema || j.ID != id || j.Attempt < 1 {
		d.t.Errorf("device %s: job %+v", d.dev.ID, j)
		return
	}
	d.mu.Lock()
	attempts := d.fetched[id]
	if len(attempts) > 0 && attempts[len(attempts)-1] == j.Attempt {
		final, done := d.finished[id]
		d.mu.Unlock()
		if done && d.reanswer {
			d.report(j, final, "")
		}
		return // the same attempt again (a notification and a catch-up)
	}
	d.fetched[id] = append(attempts, j.Attempt)
	d.jobs[id] = j
	final, done := d.finished[id]
	d.mu.Unlock()
	if done {
		d.report(j, final, "")
		return
	}
	var states []string
	if j.Kind == wire.JobRollback {
		states = []string{wire.JobReceived, wire.JobRolledBack}
	} else {
		states = d.behave(d, j)
	}
	for _, s := range states {
		reason := ""
		if s == wire.JobFailed {
			reason = wire.JobReasonSelfTest
		}
		d.report(j, s, reason)
	}
}

// msgID is deterministic per job, attempt and state, so a report sent
// again (an outbox after a restart) is a duplicate.
func msgID(j wire.Job, state string) string {
	return fmt.Sprintf("%s/%d/%s", j.ID, j.Attempt, state)
}

// report publishes one report of job j, as the agent's outbox would (QoS
// 1, on the device's own jobs/<id> topic), updating what is installed.
func (d *simDevice) report(j wire.Job, state, reason string) {
	d.mu.Lock()
	switch state {
	case wire.JobCommitted, wire.JobRolledBack:
		d.installed = [2]string{j.Package.Name, j.Package.Version}
	}
	if wire.JobTerminal(state) {
		d.finished[j.ID] = state
	}
	rep := wire.JobReport{Schema: wire.JobReportSchema, MsgID: msgID(j, state), JobID: j.ID, RolloutID: j.RolloutID,
		Attempt: j.Attempt, State: state, Reason: reason, InstalledName: d.installed[0], InstalledVersion: d.installed[1], At: time.Now()}
	d.mu.Unlock()
	d.publishReport(j.ID, rep)
}

func (d *simDevice) publishReport(job string, rep any) {
	payload, _ := json.Marshal(rep)
	d.publishRaw(mqttacl.JobTopic(d.h.Tenant, d.dev.ID, job), payload)
}

func (d *simDevice) publishRaw(topic string, payload []byte) {
	for {
		tok := d.mqtt.Publish(topic, 1, false, payload)
		if tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
			return
		}
		select {
		case <-d.done:
			return
		case <-time.After(200 * time.Millisecond): // reconnecting: the outbox tries again
		}
	}
}

func (d *simDevice) notifications() []wire.JobNotify {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]wire.JobNotify(nil), d.notified...)
}

func (d *simDevice) attempts(job string) []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]int(nil), d.fetched[job]...)
}

func (d *simDevice) wasCancelled(job string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancelled[job]
}

func (d *simDevice) job(id string) wire.Job {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.jobs[id]
}

// rolloutEnv is a control plane with a fleet, two package versions in
// its registry (records) and an operator client.
type rolloutEnv struct {
	h      *controlplanetest.Harness
	c      *client.Client
	fleet  store.Fleet
	v1, v2 store.Package
	events *eventLog
}

func newRolloutEnv(t *testing.T, opts ...controlplanetest.Option) *rolloutEnv {
	t.Helper()
	h := controlplanetest.Start(t, opts...)
	c, err := client.New(h.BaseURL, h.AdminKey, client.WithCAHash(h.CAHash))
	if err != nil {
		t.Fatal(err)
	}
	e := &rolloutEnv{h: h, c: c, fleet: h.CreateFleet(t, "edge", store.FleetPolicy{AllowSimulatedTPM: true})}
	e.v1, e.v2 = e.addPackage(t, "yolo", "1.0.0"), e.addPackage(t, "yolo", "2.0.0")
	e.events = watchRollouts(t, h)
	return e
}

// addPackage records a package in the registry as a push would.
func (e *rolloutEnv) addPackage(t *testing.T, name, version string) store.Package {
	t.Helper()
	sum := sha256.Sum256([]byte(name + "@" + version))
	p, err := e.h.Store().CreatePackage(context.Background(), e.h.Tenant, store.Package{ID: hex.EncodeToString(sum[:]), Name: name,
		Version: version, SignedID: strings.Repeat("ab", 32), Size: 4096, PublisherKeyID: strings.Repeat("cd", 16),
		Manifest: []byte(`{}`), ExpiresAt: time.Now().Add(24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// wait polls the rollout until ok, for at most within.
func (e *rolloutEnv) wait(t *testing.T, id, what string, within time.Duration, ok func(client.Rollout) bool) client.Rollout {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r, err := e.c.GetRollout(context.Background(), id)
		if err == nil && ok(r) {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout %s: not %s within %s: %+v (%v)", id, what, within, r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *rolloutEnv) waitState(t *testing.T, id, state string, within time.Duration) client.Rollout {
	t.Helper()
	return e.wait(t, id, state, within, func(r client.Rollout) bool { return r.State == state })
}

func jobOf(r client.Rollout, device, kind string) (client.RolloutJob, bool) {
	for _, j := range r.Jobs {
		if j.DeviceID == device && j.Kind == kind {
			return j, true
		}
	}
	return client.RolloutJob{}, false
}

// eventLog collects what an operator's MQTT credential sees of rollouts.
type eventLog struct {
	mu     sync.Mutex
	events []client.RolloutEvent
	status map[string][]byte // rollout → last status payload
	bad    []string
}

// watchRollouts subscribes an operator credential to every rollout's
// events and status.
func watchRollouts(t *testing.T, h *controlplanetest.Harness) *eventLog {
	t.Helper()
	key, csr := newKeyAndCSR(t)
	var creds struct {
		CertificatePEM string `json:"certificate_pem"`
	}
	api(t, h, http.MethodPost, "/api/v1/mqtt/credentials", h.AdminKey,
		map[string]string{"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))}, &creds)
	l := &eventLog{status: map[string][]byte{}}
	handler := func(_ paho.Client, m paho.Message) {
		parts := strings.Split(m.Topic(), "/")
		l.mu.Lock()
		defer l.mu.Unlock()
		switch parts[len(parts)-1] {
		case "events":
			var ev client.RolloutEvent
			if err := json.Unmarshal(m.Payload(), &ev); err != nil || ev.Schema != client.RolloutEventSchema || ev.RolloutID != parts[4] {
				l.bad = append(l.bad, string(m.Payload()))
				return
			}
			l.events = append(l.events, ev)
		case "status":
			l.status[parts[4]] = append([]byte(nil), m.Payload()...)
		}
	}
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	mqttConnect(t, h, tlsCert(t, creds.CertificatePEM, key), fmt.Sprintf("watcher-%x", suffix), func(o *paho.ClientOptions) {
		// In order (the handler never blocks): the tests read the order of
		// events.
		o.SetOrderMatters(true).SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).
			SetOnConnectHandler(func(c paho.Client) {
				c.Subscribe(mqttacl.Prefix+"/"+h.Tenant+"/rollouts/+/events", 1, handler)
				c.Subscribe(mqttacl.Prefix+"/"+h.Tenant+"/rollouts/+/status", 1, handler)
			})
	})
	time.Sleep(200 * time.Millisecond) // the subscription is in place
	return l
}

func (l *eventLog) of(rollout string) []client.RolloutEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []client.RolloutEvent
	for _, ev := range l.events {
		if ev.RolloutID == rollout {
			out = append(out, ev)
		}
	}
	return out
}

// waitEvent waits until an event of rollout matches ok.
func (l *eventLog) waitEvent(t *testing.T, rollout, what string, within time.Duration, ok func(client.RolloutEvent) bool) client.RolloutEvent {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, ev := range l.of(rollout) {
			if ok(ev) {
				return ev
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("rollout %s: no %s event within %s; events: %+v", rollout, what, within, l.of(rollout))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (l *eventLog) lastStatus(rollout string) map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var m map[string]any
	_ = json.Unmarshal(l.status[rollout], &m)
	return m
}

func (l *eventLog) malformed() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.bad...)
}
