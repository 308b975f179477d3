package controlplane

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/broker"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

func TestParseStatusTopic(t *testing.T) {
	cases := []struct {
		topic string
		ok    bool
	}{
		{"tg/v1/acme/devices/dev-a/status", true},
		{"tg/v1/acme/devices/dev-a/telemetry", false},
		{"tg/v1/acme/fleets/dev-a/status", false},
		{"tg/v2/acme/devices/dev-a/status", false},
		{"tg/v1/ACME!/devices/dev-a/status", false},
		{"tg/v1/acme/devices/dev-a/status/x", false},
	}
	for _, tc := range cases {
		if _, ok := parseStatusTopic(tc.topic); ok != tc.ok {
			t.Errorf("%s: ok %v, want %v", tc.topic, ok, tc.ok)
		}
	}
}

// TestPresenceTracker feeds status messages through the tracker into a real
// store: online is recorded, a late Will of an older session is ignored,
// the current session's offline wins, and foreign or malformed payloads
// change nothing.
func TestPresenceTracker(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "cp.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.CreateTenant(ctx, store.Tenant{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	f, err := st.CreateFleet(ctx, "acme", store.Fleet{Name: "f"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := st.CreateDevice(ctx, "acme", store.Device{FleetID: f.ID, Name: "d", TPMKind: store.TPMNone})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p := newPresenceTracker(st, func() time.Time { return now }, nil)
	p.log = discardLogger()
	var handler func(broker.Message)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	subscribed := make(chan struct{})
	go func() {
		done <- p.Run(runCtx, func(filter string, h func(broker.Message)) (func(), error) {
			if filter != StatusFilter {
				t.Errorf("filter %q", filter)
			}
			handler = h
			close(subscribed)
			return func() {}, nil
		})
	}()
	<-subscribed
	topic := "tg/v1/acme/devices/" + d.ID + "/status"
	send := func(topic string, s any) {
		b, _ := json.Marshal(s)
		handler(broker.Message{Topic: topic, Payload: b, Retained: true})
	}
	waitOnline := func(want bool, step string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got, err := st.GetDevice(ctx, "acme", d.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Online == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: online %v, want %v", step, got.Online, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	ts := now.Add(-time.Minute)
	send(topic, wire.Status{Schema: wire.StatusSchema, Device: d.ID, State: wire.StateOnline, Session: 2, TS: ts})
	waitOnline(true, "online session 2")
	if got, _ := st.GetDevice(ctx, "acme", d.ID); !got.LastSeenAt.Equal(ts) {
		t.Errorf("last seen %v, want %v", got.LastSeenAt, ts)
	}
	send(topic, wire.Status{Schema: wire.StatusSchema, Device: d.ID, State: wire.StateOffline, Session: 1})
	send(topic, wire.Status{Schema: wire.StatusSchema, Device: "dev-other", State: wire.StateOffline, Session: 3})
	send(topic, map[string]any{"schema": "tg.status.v0", "device": d.ID, "state": "offline", "session": 9})
	handler(broker.Message{Topic: topic, Payload: []byte("{garbage")})
	time.Sleep(100 * time.Millisecond)
	waitOnline(true, "late Will of session 1, foreign and malformed payloads")
	send(topic, wire.Status{Schema: wire.StatusSchema, Device: d.ID, State: wire.StateOffline, Session: 2})
	waitOnline(false, "offline session 2")
	send(topic, wire.Status{Schema: wire.StatusSchema, Device: d.ID, State: wire.StateOnline, Session: 2, TS: now})
	time.Sleep(100 * time.Millisecond)
	waitOnline(false, "online after offline in the same session")
	send(topic, wire.Status{Schema: wire.StatusSchema, Device: d.ID, State: wire.StateOnline, Session: 3, TS: now})
	waitOnline(true, "online session 3")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestPresenceTrackerRevoked: revoke publishes the device's final retained
// status (offline, revoked, the highest session seen), keeps the device
// offline against later messages, and publishes it again when anything else
// — the device's late Will — lands on the topic afterwards. A "revoked"
// flag this tracker did not publish is read as a plain offline.
func TestPresenceTrackerRevoked(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite://"+filepath.Join(t.TempDir(), "cp.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.CreateTenant(ctx, store.Tenant{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	f, err := st.CreateFleet(ctx, "acme", store.Fleet{Name: "f"})
	if err != nil {
		t.Fatal(err)
	}
	newDevice := func() store.Device {
		d, err := st.CreateDevice(ctx, "acme", store.Device{FleetID: f.ID, Name: "d", TPMKind: store.TPMNone})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	d, liar := newDevice(), newDevice()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	p := newPresenceTracker(st, func() time.Time { return now }, discardLogger())
	type published struct {
		topic string
		s     wire.Status
	}
	pubs := make(chan published, 16)
	var handler func(broker.Message)
	// What the broker does: retain and deliver to the subscription.
	p.publish = func(topic string, payload []byte) error {
		var s wire.Status
		if err := json.Unmarshal(payload, &s); err != nil {
			t.Errorf("published %s: %v", payload, err)
		}
		pubs <- published{topic, s}
		handler(broker.Message{Topic: topic, Payload: payload, Retained: true})
		return nil
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	subscribed := make(chan struct{})
	go func() {
		done <- p.Run(runCtx, func(_ string, h func(broker.Message)) (func(), error) {
			handler = h
			close(subscribed)
			return func() {}, nil
		})
	}()
	<-subscribed
	topic := "tg/v1/acme/devices/" + d.ID + "/status"
	send := func(topic string, s wire.Status) {
		b, _ := json.Marshal(s)
		handler(broker.Message{Topic: topic, Payload: b, Retained: true})
	}
	online := func(id string) bool {
		got, err := st.GetDevice(ctx, "acme", id)
		if err != nil {
			t.Fatal(err)
		}
		return got.Online
	}
	waitOnline := func(id string, want bool, step string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for online(id) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: online %v, want %v", step, !want, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	next := func(step string) published {
		t.Helper()
		select {
		case m := <-pubs:
			return m
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: nothing published", step)
			return published{}
		}
	}

	send(topic, wire.Status{Schema: wire.StatusSchema, Device: d.ID, State: wire.StateOnline, Session: 7, TS: now})
	waitOnline(d.ID, true, "online session 7")
	if _, err := st.RevokeDevice(ctx, "acme", d.ID); err != nil {
		t.Fatal(err)
	}
	if err := p.revoke("acme", d.ID); err != nil {
		t.Fatal(err)
	}
	want := wire.Status{Schema: wire.StatusSchema, Device: d.ID, State: wire.StateOffline, Session: 7, TS: now, Revoked: true}
	if m := next("revoke"); m.topic != topic || m.s != want {
		t.Fatalf("revoke published %+v on %s, want %+v on %s", m.s, m.topic, want, topic)
	}

	// The Will of the cut-off connection lands after the revoked status,
	// with a session the tracker had not seen: the revoked status is
	// published again, with that session.
	send(topic, wire.Status{Schema: wire.StatusSchema, Device: d.ID, State: wire.StateOffline, Session: 8})
	want.Session = 8
	if m := next("late Will"); m.s != want {
		t.Fatalf("after the Will: published %+v, want %+v", m.s, want)
	}
	// A stale online (a replayed retained message) changes nothing in the
	// store and is overwritten too.
	send(topic, wire.Status{Schema: wire.StatusSchema, Device: d.ID, State: wire.StateOnline, Session: 8, TS: now})
	if m := next("stale online"); m.s != want {
		t.Fatalf("after an online: published %+v, want %+v", m.s, want)
	}
	time.Sleep(100 * time.Millisecond)
	if online(d.ID) {
		t.Fatal("a revoked device was recorded online")
	}

	// A device cannot make itself final: its own "revoked" is an offline.
	ltopic := "tg/v1/acme/devices/" + liar.ID + "/status"
	send(ltopic, wire.Status{Schema: wire.StatusSchema, Device: liar.ID, State: wire.StateOnline, Session: 1, TS: now})
	waitOnline(liar.ID, true, "liar online")
	send(ltopic, wire.Status{Schema: wire.StatusSchema, Device: liar.ID, State: wire.StateOffline, Session: 1, Revoked: true})
	waitOnline(liar.ID, false, "liar offline")
	send(ltopic, wire.Status{Schema: wire.StatusSchema, Device: liar.ID, State: wire.StateOnline, Session: 2, TS: now})
	waitOnline(liar.ID, true, "liar online again in a new session")
	select {
	case m := <-pubs:
		t.Fatalf("published %+v for a device nobody revoked", m)
	default:
	}
	if _, err := parseStatus([]byte(`{"schema":"tg.status.v1","device":"d","state":"online","session":1,"revoked":true}`), "d"); err == nil {
		t.Fatal("an online status marked revoked was accepted")
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
