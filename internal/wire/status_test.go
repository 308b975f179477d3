package wire

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestLatestStatus(t *testing.T) {
	on := func(s uint64) Status {
		return Status{Schema: StatusSchema, Device: "d", State: StateOnline, Session: s}
	}
	off := func(s uint64) Status {
		return Status{Schema: StatusSchema, Device: "d", State: StateOffline, Session: s}
	}
	revoked := func(s uint64) Status {
		return Status{Schema: StatusSchema, Device: "d", State: StateOffline, Session: s, Revoked: true}
	}
	cases := []struct {
		name             string
		prev, next, want Status
	}{
		{"first", Status{}, on(1), on(1)},
		{"newer session", off(1), on(2), on(2)},
		{"late Will of an older session", on(2), off(1), on(2)},
		{"offline ends the session", on(2), off(2), off(2)},
		{"no online after offline in a session", off(2), on(2), off(2)},
		{"repeated online", on(2), on(2), on(2)},
		{"revoked ends the session", on(2), revoked(2), revoked(2)},
		{"revoked is final over a late Will", revoked(2), off(2), revoked(2)},
		{"revoked is final over a newer session", revoked(2), on(3), revoked(2)},
		{"revoked wins over a newer session seen first", on(3), revoked(2), revoked(2)},
		{"a newer revoked status", revoked(2), revoked(3), revoked(3)},
		{"an older revoked status", revoked(3), revoked(2), revoked(3)},
	}
	for _, tc := range cases {
		if got := LatestStatus(tc.prev, tc.next); got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// TestStatusRevokedOptional: payloads without "revoked" (every agent's) keep
// decoding, and the field is omitted unless set, so old watchers see the
// messages they always saw.
func TestStatusRevokedOptional(t *testing.T) {
	var s Status
	if err := json.Unmarshal([]byte(`{"schema":"tg.status.v1","device":"d","state":"offline","session":3}`), &s); err != nil || s.Revoked {
		t.Fatalf("old payload: %+v %v", s, err)
	}
	b, _ := json.Marshal(Status{Schema: StatusSchema, Device: "d", State: StateOnline, Session: 1})
	if strings.Contains(string(b), "revoked") {
		t.Fatalf("revoked written when unset: %s", b)
	}
	b, _ = json.Marshal(Status{Schema: StatusSchema, Device: "d", State: StateOffline, Session: 1, Revoked: true})
	if err := json.Unmarshal(b, &s); err != nil || !s.Revoked || !strings.Contains(string(b), `"revoked":true`) {
		t.Fatalf("round trip of %s: %+v %v", b, s, err)
	}
}
