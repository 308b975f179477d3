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
