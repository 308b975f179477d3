package wire

import "testing"

func TestLatestStatus(t *testing.T) {
	on := func(s uint64) Status {
		return Status{Schema: StatusSchema, Device: "d", State: StateOnline, Session: s}
	}
	off := func(s uint64) Status {
		return Status{Schema: StatusSchema, Device: "d", State: StateOffline, Session: s}
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
	}
	for _, tc := range cases {
		if got := LatestStatus(tc.prev, tc.next); got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
