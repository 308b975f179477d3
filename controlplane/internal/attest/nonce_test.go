package attest_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/attest"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

func TestMemoryNonces(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	type presentation struct {
		tenant, device, id string
		value              []byte
	}
	for _, c := range []struct {
		name string
		// present returns what is presented, given the issued nonce; after
		// advancing the clock by wait.
		wait    time.Duration
		present func(n attest.Nonce) presentation
		first   error // result of the presentation
		// honest is the result of the rightful presentation afterwards.
		honest error
	}{
		{name: "rightful", present: func(n attest.Nonce) presentation { return presentation{tenant, "dev-a", n.ID, n.Value} },
			honest: attest.ErrNonceReplayed},
		{name: "other device", present: func(n attest.Nonce) presentation { return presentation{tenant, "dev-b", n.ID, n.Value} },
			first: attest.ErrNonceUnknown},
		{name: "other tenant", present: func(n attest.Nonce) presentation { return presentation{"globex", "dev-a", n.ID, n.Value} },
			first: attest.ErrNonceUnknown},
		{name: "wrong value", present: func(n attest.Nonce) presentation {
			v := bytes.Clone(n.Value)
			v[31] ^= 1
			return presentation{tenant, "dev-a", n.ID, v}
		}, first: attest.ErrNonceUnknown},
		{name: "prefix of the value", present: func(n attest.Nonce) presentation { return presentation{tenant, "dev-a", n.ID, n.Value[:16]} },
			first: attest.ErrNonceUnknown},
		{name: "unknown id", present: func(n attest.Nonce) presentation { return presentation{tenant, "dev-a", n.ID + "0", n.Value} },
			first: attest.ErrNonceUnknown},
		{name: "expired", wait: 61 * time.Second, present: func(n attest.Nonce) presentation { return presentation{tenant, "dev-a", n.ID, n.Value} },
			first: attest.ErrNonceExpired, honest: attest.ErrNonceExpired},
		{name: "forgotten", wait: 121 * time.Second, present: func(n attest.Nonce) presentation { return presentation{tenant, "dev-a", n.ID, n.Value} },
			first: attest.ErrNonceUnknown, honest: attest.ErrNonceUnknown},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
			m := &attest.MemoryNonces{Now: clock.Now}
			n := issue(t, m, "dev-a")
			if len(n.Value) != attest.NonceSize || n.ID == "" || !n.ExpiresAt.Equal(n.IssuedAt.Add(time.Minute)) {
				t.Fatalf("issued %+v", n)
			}
			clock.Advance(c.wait)
			p := c.present(n)
			issuedAt, err := m.Consume(ctx, p.tenant, p.device, p.id, p.value)
			if !errors.Is(err, c.first) {
				t.Fatalf("presentation: %v, want %v", err, c.first)
			}
			if err == nil && !issuedAt.Equal(n.IssuedAt) {
				t.Errorf("issued at %v, want %v", issuedAt, n.IssuedAt)
			}
			// A wrong presentation must not burn the nonce for its device.
			_, err = m.Consume(ctx, tenant, "dev-a", n.ID, n.Value)
			if !errors.Is(err, c.honest) {
				t.Fatalf("rightful presentation afterwards: %v, want %v", err, c.honest)
			}
		})
	}
}

func TestReasonForNonceError(t *testing.T) {
	t.Parallel()
	for err, want := range map[error]string{
		attest.ErrNonceUnknown:  wire.ReasonNonceUnknown,
		attest.ErrNonceExpired:  wire.ReasonNonceExpired,
		attest.ErrNonceReplayed: wire.ReasonNonceReplayed,
	} {
		if got, ok := attest.ReasonForNonceError(errors.Join(errors.New("db"), err)); !ok || got != want {
			t.Errorf("%v -> %q %v, want %q", err, got, ok, want)
		}
	}
	if _, ok := attest.ReasonForNonceError(errors.New("connection refused")); ok {
		t.Error("a store failure mapped to a device reason")
	}
}

func TestMemoryNoncesBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	m := &attest.MemoryNonces{Now: clock.Now, MaxOutstanding: 3, Retain: time.Second}
	for range 3 {
		issue(t, m, "dev-a")
	}
	if _, err := m.Issue(ctx, tenant, "dev-a", time.Minute); !errors.Is(err, attest.ErrTooManyNonces) {
		t.Fatalf("fourth nonce: %v", err)
	}
	// Consumed nonces still count until forgotten (so a replay is named).
	clock.Advance(time.Minute + time.Second)
	if _, err := m.Issue(ctx, tenant, "dev-a", time.Minute); err != nil {
		t.Fatalf("after expiry and retention: %v", err)
	}
	if m.Len() != 1 {
		t.Fatalf("%d nonces remembered, want 1", m.Len())
	}
	for _, bad := range []struct {
		tenant, device string
		ttl            time.Duration
	}{{"", "d", time.Minute}, {"t", "", time.Minute}, {"t", "d", 0}} {
		if _, err := m.Issue(ctx, bad.tenant, bad.device, bad.ttl); err == nil {
			t.Errorf("Issue(%q, %q, %v) succeeded", bad.tenant, bad.device, bad.ttl)
		}
	}
}

// TestMemoryNoncesSingleUse: of many concurrent presentations of one nonce,
// exactly one succeeds.
func TestMemoryNoncesSingleUse(t *testing.T) {
	t.Parallel()
	m := attest.NewMemoryNonces()
	n := issue(t, m, "dev-a")
	var ok, replayed atomic.Int32
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			_, err := m.Consume(context.Background(), tenant, "dev-a", n.ID, n.Value)
			switch {
			case err == nil:
				ok.Add(1)
			case errors.Is(err, attest.ErrNonceReplayed):
				replayed.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 1 || replayed.Load() != 31 {
		t.Fatalf("%d successes, %d replays", ok.Load(), replayed.Load())
	}
	// Nonces are random and distinct.
	if n2 := issue(t, m, "dev-a"); bytes.Equal(n2.Value, n.Value) || n2.ID == n.ID {
		t.Fatal("two nonces are equal")
	}
}
