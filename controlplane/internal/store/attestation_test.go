package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// forEachBackendWith is forEachBackendClock with extra Open options.
func forEachBackendWith(t *testing.T, opts []Option, fn func(t *testing.T, s *Store, clk *clock)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			clk := newClock()
			s := openStore(t, backendDSN(t, b), append([]Option{WithClock(clk.Now)}, opts...)...)
			fn(t, s, clk)
		})
	}
}

// countRows counts the rows of table that belong to a device.
func countRows(t *testing.T, s *Store, table, tenant, device string) int {
	t.Helper()
	var n int
	if err := s.writeDB.QueryRowContext(context.Background(), s.dialect.rebind(`SELECT COUNT(*) FROM `+table+` WHERE tenant_id = ? AND device_id = ?`),
		tenant, device).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

func TestVerdictStatesMatchWire(t *testing.T) {
	t.Parallel()
	for got, want := range map[VerdictState]string{
		VerdictTrusted: wire.VerdictTrusted, VerdictUntrusted: wire.VerdictUntrusted,
		VerdictStale: wire.VerdictStale, VerdictUnknown: wire.VerdictUnknown,
	} {
		if string(got) != want || !got.Valid() {
			t.Errorf("store verdict %q, wire %q", got, want)
		}
	}
	if VerdictState("Trusted").Valid() || VerdictState("").Valid() {
		t.Error("Valid accepts an unknown state")
	}
}

func TestAttestationStateRoundTrip(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		d := mustDevice(t, s, "acme", fx.fleet.ID, "ek1")

		// Never attested: unknown, with the device's fleet.
		got, err := s.GetAttestationState(ctx, "acme", d.ID)
		want := AttestationState{Tenant: "acme", DeviceID: d.ID, FleetID: fx.fleet.ID, State: VerdictUnknown}
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("GetAttestationState of a new device = %+v, %v; want %+v", got, err, want)
		}
		_, err = s.GetAttestationState(ctx, "acme", NewID(PrefixDevice))
		wantErr(t, "state of an unknown device", err, ErrNotFound)

		now := clk.Now().Truncate(time.Microsecond)
		full := AttestationState{
			Tenant: "acme", DeviceID: d.ID, FleetID: fx.fleet.ID,
			State: VerdictUntrusted,
			// Odd spacing and key order: kept byte for byte.
			Reasons:    json.RawMessage(`[{"code":"PCR_POLICY",  "pcr":7, "detail":"x"}]`),
			PCRDigest:  strings.Repeat("ab", 32),
			EvidenceAt: now.Add(-time.Second), VerdictAt: now,
			NonceAgeMS: 1234, Reboot: true,
			// The extremes of each counter survive the int64 columns.
			TPM: &TPMClockState{Clock: math.MaxUint64, ResetCount: math.MaxUint32, RestartCount: 7,
				FirmwareVersion: 1 << 63, VerifiedAt: now.Add(-time.Minute)},
			BaselinePCRs:        map[int][]byte{0: bytes.Repeat([]byte{1}, 32), 7: bytes.Repeat([]byte{0xfe}, 32), 23: {}},
			Quarantined:         true,
			LastChallengeAt:     now.Add(-2 * time.Second),
			ConsecutiveFailures: 3,
		}
		if err := s.PutAttestationState(ctx, "acme", full); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetAttestationState(ctx, "acme", d.ID); err != nil || !reflect.DeepEqual(got, full) {
			t.Fatalf("round trip:\n got %+v (TPM %+v), %v\nwant %+v (TPM %+v)", got, got.TPM, err, full, full.TPM)
		}

		// Put replaces every field; nil and zero values come back as such.
		sparse := AttestationState{Tenant: "acme", DeviceID: d.ID, FleetID: fx.fleet.ID, State: VerdictTrusted, VerdictAt: now.Add(time.Second)}
		if err := s.PutAttestationState(ctx, "acme", sparse); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetAttestationState(ctx, "acme", d.ID); err != nil || !reflect.DeepEqual(got, sparse) {
			t.Fatalf("after replacing:\n got %+v, %v\nwant %+v", got, err, sparse)
		}
		// An empty baseline is not "no baseline".
		sparse.BaselinePCRs = map[int][]byte{}
		if err := s.PutAttestationState(ctx, "acme", sparse); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.GetAttestationState(ctx, "acme", d.ID); got.BaselinePCRs == nil || len(got.BaselinePCRs) != 0 {
			t.Errorf("empty baseline read back as %#v", got.BaselinePCRs)
		}
		// Sub-microsecond times are stored truncated, in UTC.
		local := time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.FixedZone("X", 3600))
		if err := s.PutAttestationState(ctx, "acme", AttestationState{DeviceID: d.ID, State: VerdictTrusted, VerdictAt: local}); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.GetAttestationState(ctx, "acme", d.ID); !got.VerdictAt.Equal(local.Truncate(time.Microsecond)) || got.VerdictAt.Location() != time.UTC {
			t.Errorf("VerdictAt = %v, want %v in UTC", got.VerdictAt, local.Truncate(time.Microsecond))
		}

		for _, tc := range []struct {
			name string
			st   AttestationState
			want error
		}{
			{"no device", AttestationState{State: VerdictTrusted, VerdictAt: now}, ErrInvalid},
			{"bad state", AttestationState{DeviceID: d.ID, State: "fine", VerdictAt: now}, ErrInvalid},
			{"verdict without time", AttestationState{DeviceID: d.ID, State: VerdictStale}, ErrInvalid},
			{"reasons not JSON", AttestationState{DeviceID: d.ID, State: VerdictUntrusted, VerdictAt: now, Reasons: json.RawMessage(`[{`)}, ErrInvalid},
			{"negative PCR", AttestationState{DeviceID: d.ID, State: VerdictTrusted, VerdictAt: now, BaselinePCRs: map[int][]byte{-1: {1}}}, ErrInvalid},
			{"negative failures", AttestationState{DeviceID: d.ID, State: VerdictTrusted, VerdictAt: now, ConsecutiveFailures: -1}, ErrInvalid},
			{"unknown device", AttestationState{DeviceID: NewID(PrefixDevice), State: VerdictTrusted, VerdictAt: now}, ErrNotFound},
		} {
			wantErr(t, tc.name, s.PutAttestationState(ctx, "acme", tc.st), tc.want)
		}
		// An unknown verdict needs no time (an operator reset).
		if err := s.PutAttestationState(ctx, "acme", AttestationState{DeviceID: d.ID, State: VerdictUnknown}); err != nil {
			t.Errorf("unknown state without time: %v", err)
		}
	})
}

// TestAttestationStateReadModifyWrite: concurrent Get+Put transactions on
// one device lose no update (the row lock on PostgreSQL).
func TestAttestationStateReadModifyWrite(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		d := mustDevice(t, s, "acme", fx.fleet.ID, "ek1")
		if err := s.PutAttestationState(ctx, "acme", AttestationState{DeviceID: d.ID, State: VerdictTrusted, VerdictAt: clk.Now()}); err != nil {
			t.Fatal(err)
		}
		const workers = 8
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for range workers {
			wg.Go(func() {
				errs <- s.WithTx(ctx, func(tx *Tx) error {
					st, err := tx.GetAttestationState(ctx, "acme", d.ID)
					if err != nil {
						return err
					}
					time.Sleep(5 * time.Millisecond) // widen the window a lost update needs
					st.ConsecutiveFailures++
					return tx.PutAttestationState(ctx, "acme", st)
				})
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		if st, _ := s.GetAttestationState(ctx, "acme", d.ID); st.ConsecutiveFailures != workers {
			t.Fatalf("ConsecutiveFailures = %d after %d increments", st.ConsecutiveFailures, workers)
		}
	})
}

func TestQuarantine(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		d := mustDevice(t, s, "acme", fx.fleet.ID, "ek1")
		other := mustDevice(t, s, "acme", fx.fleet.ID, "ek2")

		if q, err := s.Quarantined(ctx, "acme", d.ID); err != nil || q {
			t.Fatalf("Quarantined of a never attested device = %v, %v", q, err)
		}
		_, err := s.Quarantined(ctx, "acme", NewID(PrefixDevice))
		wantErr(t, "Quarantined of an unknown device", err, ErrNotFound)
		wantErr(t, "SetQuarantined of an unknown device", s.SetQuarantined(ctx, "acme", NewID(PrefixDevice), true), ErrNotFound)

		// Quarantining a device without state gives it an unknown one.
		if err := s.SetQuarantined(ctx, "acme", d.ID, true); err != nil {
			t.Fatal(err)
		}
		if q, err := s.Quarantined(ctx, "acme", d.ID); err != nil || !q {
			t.Fatalf("Quarantined after SetQuarantined = %v, %v", q, err)
		}
		if st, _ := s.GetAttestationState(ctx, "acme", d.ID); st.State != VerdictUnknown || !st.Quarantined || !st.VerdictAt.IsZero() {
			t.Errorf("state after quarantining = %+v", st)
		}

		// The flag shows on the device rows, whichever query returns them.
		if got, _ := s.GetDevice(ctx, "acme", d.ID); !got.Quarantined {
			t.Error("GetDevice: not quarantined")
		}
		list, _ := s.ListDevices(ctx, "acme", DeviceFilter{})
		for _, dev := range list {
			if dev.Quarantined != (dev.ID == d.ID) {
				t.Errorf("ListDevices: %s quarantined = %v", dev.ID, dev.Quarantined)
			}
		}
		name := "renamed"
		if up, err := s.UpdateDevice(ctx, "acme", d.ID, DeviceUpdate{Name: &name}); err != nil || !up.Quarantined {
			t.Errorf("UpdateDevice = %+v, %v; want quarantined", up, err)
		}

		// A verdict keeps the flag it is given; the state keeps the verdict
		// when the flag changes.
		now := clk.Now()
		st, _ := s.GetAttestationState(ctx, "acme", d.ID)
		st.State, st.VerdictAt = VerdictUntrusted, now
		if err := s.PutAttestationState(ctx, "acme", st); err != nil {
			t.Fatal(err)
		}
		if err := s.SetQuarantined(ctx, "acme", d.ID, false); err != nil {
			t.Fatal(err)
		}
		if st, _ := s.GetAttestationState(ctx, "acme", d.ID); st.Quarantined || st.State != VerdictUntrusted || !st.VerdictAt.Equal(now.Truncate(time.Microsecond)) {
			t.Errorf("state after lifting = %+v", st)
		}
		if q, _ := s.Quarantined(ctx, "acme", d.ID); q {
			t.Error("still quarantined after lifting")
		}
		if rev, err := s.RevokeDevice(ctx, "acme", other.ID); err != nil || rev.Quarantined {
			t.Errorf("RevokeDevice = %+v, %v", rev, err)
		}
	})
}

func TestAttestationTenantIsolation(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		a := mustFixture(t, s, "acme")
		mustFixture(t, s, "beta")
		dev := mustDevice(t, s, "acme", a.fleet.ID, "ek-acme")
		now := clk.Now().Truncate(time.Microsecond)
		acmeState := AttestationState{Tenant: "acme", DeviceID: dev.ID, FleetID: a.fleet.ID, State: VerdictTrusted, VerdictAt: now, LastChallengeAt: now}
		if err := s.PutAttestationState(ctx, "acme", acmeState); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendAttestationHistory(ctx, "acme", AttestationRecord{DeviceID: dev.ID, State: VerdictTrusted, VerdictAt: now}); err != nil {
			t.Fatal(err)
		}
		n, err := s.IssueNonce(ctx, "acme", dev.ID, time.Minute)
		if err != nil {
			t.Fatal(err)
		}

		const beta = "beta"
		for _, tc := range []struct {
			name string
			call func() error
		}{
			{"GetAttestationState", func() error { _, err := s.GetAttestationState(ctx, beta, dev.ID); return err }},
			{"PutAttestationState", func() error {
				return s.PutAttestationState(ctx, beta, AttestationState{DeviceID: dev.ID, State: VerdictUntrusted, VerdictAt: now})
			}},
			{"SetQuarantined", func() error { return s.SetQuarantined(ctx, beta, dev.ID, true) }},
			{"Quarantined", func() error { _, err := s.Quarantined(ctx, beta, dev.ID); return err }},
			{"AppendAttestationHistory", func() error {
				_, err := s.AppendAttestationHistory(ctx, beta, AttestationRecord{DeviceID: dev.ID, State: VerdictUntrusted, VerdictAt: now})
				return err
			}},
			{"IssueNonce", func() error { _, err := s.IssueNonce(ctx, beta, dev.ID, time.Minute); return err }},
			{"ConsumeNonce", func() error { _, err := s.ConsumeNonce(ctx, beta, dev.ID, n.ID, n.Value); return err }},
		} {
			wantErr(t, tc.name, tc.call(), ErrNotFound)
		}
		if l, err := s.ListAttestationStates(ctx, beta, AttestationFilter{}); err != nil || len(l) != 0 {
			t.Errorf("beta's ListAttestationStates = %+v, %v", l, err)
		}
		if l, err := s.ListAttestationStates(ctx, beta, AttestationFilter{FleetID: a.fleet.ID}); err != nil || len(l) != 0 {
			t.Errorf("beta's ListAttestationStates of acme's fleet = %+v, %v", l, err)
		}
		if h, err := s.ListAttestationHistory(ctx, beta, dev.ID, time.Time{}, 0); err != nil || len(h) != 0 {
			t.Errorf("beta's ListAttestationHistory = %+v, %v", h, err)
		}

		// Nothing of acme's changed, and its nonce still works.
		if got, err := s.GetAttestationState(ctx, "acme", dev.ID); err != nil || !reflect.DeepEqual(got, acmeState) {
			t.Errorf("acme's state after beta's attempts = %+v, %v", got, err)
		}
		if h, _ := s.ListAttestationHistory(ctx, "acme", dev.ID, time.Time{}, 0); len(h) != 1 {
			t.Errorf("acme's history has %d entries, want 1", len(h))
		}
		if _, err := s.ConsumeNonce(ctx, "acme", dev.ID, n.ID, n.Value); err != nil {
			t.Errorf("acme's nonce after beta's attempt: %v", err)
		}
	})
}

func TestNonces(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		a := mustDevice(t, s, "acme", fx.fleet.ID, "ekA")
		b := mustDevice(t, s, "acme", fx.fleet.ID, "ekB")

		n, err := s.IssueNonce(ctx, "acme", a.ID, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		issued := clk.Now().Truncate(time.Microsecond)
		if !ValidID(PrefixChallenge, n.ID) || len(n.Value) != NonceSize || n.Tenant != "acme" || n.DeviceID != a.ID ||
			!n.IssuedAt.Equal(issued) || !n.ExpiresAt.Equal(issued.Add(time.Minute)) {
			t.Fatalf("IssueNonce = %+v", n)
		}
		if n2, _ := s.IssueNonce(ctx, "acme", a.ID, time.Minute); bytes.Equal(n2.Value, n.Value) || n2.ID == n.ID {
			t.Error("two nonces are equal")
		}
		// Only the hash is stored.
		var hash []byte
		if err := s.writeDB.QueryRowContext(ctx, s.dialect.rebind(`SELECT nonce_hash FROM attestation_nonces WHERE id = ?`), n.ID).Scan(&hash); err != nil {
			t.Fatal(err)
		}
		if want := sha256.Sum256(n.Value); !bytes.Equal(hash, want[:]) {
			t.Errorf("stored %x, want SHA-256 of the nonce", hash)
		}
		// Issuing records the challenge time, without a verdict.
		if st, _ := s.GetAttestationState(ctx, "acme", a.ID); !st.LastChallengeAt.Equal(issued) || st.State != VerdictUnknown {
			t.Errorf("state after IssueNonce = %+v", st)
		}

		// Refusals that leave the nonce to its device.
		wrong := bytes.Clone(n.Value)
		wrong[0] ^= 1
		for _, tc := range []struct {
			name           string
			tenant, device string
			id             string
			value          []byte
		}{
			{"another device", "acme", b.ID, n.ID, n.Value},
			{"wrong value", "acme", a.ID, n.ID, wrong},
			{"no value", "acme", a.ID, n.ID, nil},
			{"unknown id", "acme", a.ID, NewID(PrefixChallenge), n.Value},
			{"another tenant", "beta", a.ID, n.ID, n.Value},
		} {
			_, err := s.ConsumeNonce(ctx, tc.tenant, tc.device, tc.id, tc.value)
			wantErr(t, tc.name, err, ErrNotFound)
		}

		clk.Advance(time.Minute - time.Microsecond)
		got, err := s.ConsumeNonce(ctx, "acme", a.ID, n.ID, n.Value)
		if err != nil || !got.Equal(n.IssuedAt) {
			t.Fatalf("ConsumeNonce = %v, %v; want %v", got, err, n.IssuedAt)
		}
		_, err = s.ConsumeNonce(ctx, "acme", a.ID, n.ID, n.Value)
		wantErr(t, "replay", err, ErrNonceUsed)
		// Another device presenting a used nonce learns nothing about it.
		_, err = s.ConsumeNonce(ctx, "acme", b.ID, n.ID, n.Value)
		wantErr(t, "replay by another device", err, ErrNotFound)

		// Expiry by the store's clock: valid strictly before ExpiresAt.
		e, _ := s.IssueNonce(ctx, "acme", b.ID, time.Second)
		clk.Advance(time.Second)
		_, err = s.ConsumeNonce(ctx, "acme", b.ID, e.ID, e.Value)
		wantErr(t, "expired", err, ErrNonceExpired)
		_, err = s.ConsumeNonce(ctx, "acme", b.ID, e.ID, e.Value)
		wantErr(t, "expired, again", err, ErrNonceExpired)

		for _, ttl := range []time.Duration{0, -time.Second, time.Nanosecond} {
			_, err := s.IssueNonce(ctx, "acme", a.ID, ttl)
			wantErr(t, fmt.Sprint("ttl ", ttl), err, ErrInvalid)
		}
		_, err = s.IssueNonce(ctx, "acme", NewID(PrefixDevice), time.Minute)
		wantErr(t, "nonce for an unknown device", err, ErrNotFound)

		// Pruning removes what expired before the cutoff, used or not, and
		// leaves live nonces.
		clk.Advance(time.Microsecond) // e expired at the last instant; now it is before the cutoff
		live, _ := s.IssueNonce(ctx, "acme", a.ID, time.Hour)
		pruned, err := s.PruneNonces(ctx, clk.Now())
		if err != nil || pruned != 3 { // n, n2 and e
			t.Fatalf("PruneNonces = %d, %v; want 3", pruned, err)
		}
		_, err = s.ConsumeNonce(ctx, "acme", a.ID, n.ID, n.Value)
		wantErr(t, "replay after pruning", err, ErrNotFound)
		if _, err := s.ConsumeNonce(ctx, "acme", a.ID, live.ID, live.Value); err != nil {
			t.Errorf("live nonce after pruning: %v", err)
		}
		if pruned, _ := s.PruneNonces(ctx, clk.Now()); pruned != 0 {
			t.Errorf("second prune removed %d", pruned)
		}
	})
}

// TestNonceSingleUseConcurrent: of 16 concurrent consumers exactly one wins.
func TestNonceSingleUseConcurrent(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		d := mustDevice(t, s, "acme", fx.fleet.ID, "ek1")
		const consumers, rounds = 16, 5
		for round := range rounds {
			n, err := s.IssueNonce(ctx, "acme", d.ID, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			start := make(chan struct{})
			errs := make(chan error, consumers)
			var wg sync.WaitGroup
			for range consumers {
				wg.Go(func() {
					<-start
					_, err := s.ConsumeNonce(ctx, "acme", d.ID, n.ID, n.Value)
					errs <- err
				})
			}
			close(start)
			wg.Wait()
			close(errs)
			won := 0
			for err := range errs {
				switch {
				case err == nil:
					won++
				case !errors.Is(err, ErrNonceUsed):
					t.Errorf("round %d: loser got %v, want ErrNonceUsed", round, err)
				}
			}
			if won != 1 {
				t.Fatalf("round %d: %d consumers won, want exactly 1", round, won)
			}
		}
	})
}

func TestAttestationHistory(t *testing.T) {
	t.Parallel()
	const keep = 5
	forEachBackendWith(t, []Option{WithAttestationHistory(keep)}, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		d := mustDevice(t, s, "acme", fx.fleet.ID, "ek1")
		other := mustDevice(t, s, "acme", fx.fleet.ID, "ek2")
		if h, err := s.ListAttestationHistory(ctx, "acme", d.ID, time.Time{}, 0); err != nil || len(h) != 0 {
			t.Fatalf("empty history = %+v, %v", h, err)
		}

		base := clk.Now().Truncate(time.Microsecond)
		var appended []AttestationRecord
		for i := range 12 {
			r := AttestationRecord{
				DeviceID: d.ID, State: VerdictTrusted, VerdictAt: base.Add(time.Duration(i) * time.Second),
				EvidenceAt: base.Add(time.Duration(i)*time.Second - time.Millisecond), PCRDigest: fmt.Sprintf("%064x", i),
				NonceAgeMS: int64(i), Reboot: i == 3,
			}
			if i%2 == 1 {
				r.State, r.Reasons = VerdictUntrusted, json.RawMessage(fmt.Sprintf(`[ {"code": "PCR_POLICY", "pcr": %d} ]`, i))
			}
			got, err := s.AppendAttestationHistory(ctx, "acme", r)
			r.Tenant, r.Seq = "acme", int64(i+1)
			if err != nil || !reflect.DeepEqual(got, r) {
				t.Fatalf("AppendAttestationHistory #%d = %+v, %v; want %+v", i, got, err, r)
			}
			appended = append(appended, got)
		}
		if _, err := s.AppendAttestationHistory(ctx, "acme", AttestationRecord{DeviceID: other.ID, State: VerdictStale, VerdictAt: base}); err != nil {
			t.Fatal(err)
		}

		// Trimmed to the newest keep, newest first, byte for byte.
		h, err := s.ListAttestationHistory(ctx, "acme", d.ID, time.Time{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		want := []AttestationRecord{appended[11], appended[10], appended[9], appended[8], appended[7]}
		if !reflect.DeepEqual(h, want) {
			t.Fatalf("history =\n %+v\nwant\n %+v", h, want)
		}
		if n := countRows(t, s, "attestation_history", "acme", d.ID); n != keep {
			t.Errorf("%d rows stored, want %d", n, keep)
		}
		if n := countRows(t, s, "attestation_history", "acme", other.ID); n != 1 {
			t.Errorf("other device has %d entries, want 1 (trimming is per device)", n)
		}

		// Paging: before is exclusive.
		page, err := s.ListAttestationHistory(ctx, "acme", d.ID, time.Time{}, 2)
		if err != nil || len(page) != 2 || page[1].Seq != 11 {
			t.Fatalf("first page = %+v, %v", page, err)
		}
		page, err = s.ListAttestationHistory(ctx, "acme", d.ID, page[1].VerdictAt, 2)
		if err != nil || len(page) != 2 || page[0].Seq != 10 || page[1].Seq != 9 {
			t.Fatalf("second page = %+v, %v", page, err)
		}
		page, _ = s.ListAttestationHistory(ctx, "acme", d.ID, page[1].VerdictAt, 100)
		if len(page) != 1 || page[0].Seq != 8 {
			t.Fatalf("last page = %+v", page)
		}

		// Ordered by verdict time, not by arrival.
		late, err := s.AppendAttestationHistory(ctx, "acme", AttestationRecord{DeviceID: d.ID, State: VerdictStale, VerdictAt: base.Add(9500 * time.Millisecond)})
		if err != nil || late.Seq != 13 {
			t.Fatalf("late append = %+v, %v", late, err)
		}
		h, _ = s.ListAttestationHistory(ctx, "acme", d.ID, time.Time{}, 0)
		var seqs []int64
		for _, r := range h {
			seqs = append(seqs, r.Seq)
		}
		if want := []int64{12, 11, 13, 10, 9}; !reflect.DeepEqual(seqs, want) {
			t.Errorf("order by verdict time: seqs %v, want %v", seqs, want)
		}

		for _, tc := range []struct {
			name string
			r    AttestationRecord
			want error
		}{
			{"no device", AttestationRecord{State: VerdictTrusted, VerdictAt: base}, ErrInvalid},
			{"bad state", AttestationRecord{DeviceID: d.ID, State: "ok", VerdictAt: base}, ErrInvalid},
			{"no time", AttestationRecord{DeviceID: d.ID, State: VerdictTrusted}, ErrInvalid},
			{"reasons not JSON", AttestationRecord{DeviceID: d.ID, State: VerdictUntrusted, VerdictAt: base, Reasons: json.RawMessage(`nope`)}, ErrInvalid},
			{"unknown device", AttestationRecord{DeviceID: NewID(PrefixDevice), State: VerdictTrusted, VerdictAt: base}, ErrNotFound},
		} {
			_, err := s.AppendAttestationHistory(ctx, "acme", tc.r)
			wantErr(t, tc.name, err, tc.want)
		}

		// A verdict and its history entry commit together, or not at all.
		boom := errors.New("boom")
		err = s.WithTx(ctx, func(tx *Tx) error {
			if err := tx.PutAttestationState(ctx, "acme", AttestationState{DeviceID: d.ID, State: VerdictUntrusted, VerdictAt: base}); err != nil {
				return err
			}
			if _, err := tx.AppendAttestationHistory(ctx, "acme", AttestationRecord{DeviceID: d.ID, State: VerdictUntrusted, VerdictAt: base.Add(time.Hour)}); err != nil {
				return err
			}
			return boom
		})
		wantErr(t, "rolled back transaction", err, boom)
		if st, _ := s.GetAttestationState(ctx, "acme", d.ID); st.State != VerdictUnknown {
			t.Errorf("state after rollback = %s", st.State)
		}
		if h, _ := s.ListAttestationHistory(ctx, "acme", d.ID, time.Time{}, 1); h[0].Seq != 12 {
			t.Errorf("newest entry after rollback = %+v", h[0])
		}
		if next, _ := s.AppendAttestationHistory(ctx, "acme", AttestationRecord{DeviceID: d.ID, State: VerdictTrusted, VerdictAt: base.Add(time.Hour)}); next.Seq != 14 {
			t.Errorf("seq after a rolled-back append = %d, want 14", next.Seq)
		}
	})
}

// TestAttestationHistoryConcurrentAppends: appends to one device from many
// goroutines get distinct, contiguous sequence numbers.
func TestAttestationHistoryConcurrentAppends(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		d := mustDevice(t, s, "acme", fx.fleet.ID, "ek1")
		const workers, each = 8, 5
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		for range workers {
			wg.Go(func() {
				for range each {
					_, err := s.AppendAttestationHistory(ctx, "acme", AttestationRecord{DeviceID: d.ID, State: VerdictTrusted, VerdictAt: clk.Now()})
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		h, err := s.ListAttestationHistory(ctx, "acme", d.ID, time.Time{}, MaxHistoryPage)
		if err != nil || len(h) != workers*each {
			t.Fatalf("%d entries, %v; want %d", len(h), err, workers*each)
		}
		seen := map[int64]bool{}
		for _, r := range h {
			seen[r.Seq] = true
		}
		for seq := int64(1); seq <= workers*each; seq++ {
			if !seen[seq] {
				t.Errorf("seq %d missing", seq)
			}
		}
	})
}

func TestAttestationHistoryDefaultKeep(t *testing.T) {
	t.Parallel()
	dsn := backendDSN(t, "sqlite")
	if s := openStore(t, dsn); s.historyKeep != DefaultAttestationHistory {
		t.Errorf("default keep %d", s.historyKeep)
	}
	if s := openStore(t, dsn, WithAttestationHistory(0)); s.historyKeep != DefaultAttestationHistory {
		t.Errorf("WithAttestationHistory(0) keeps %d", s.historyKeep)
	}
	if s := openStore(t, dsn, WithAttestationHistory(7)); s.historyKeep != 7 {
		t.Errorf("WithAttestationHistory(7) keeps %d", s.historyKeep)
	}
}

func TestListAttestationStates(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		lab, err := s.CreateFleet(ctx, "acme", Fleet{Name: "lab"})
		if err != nil {
			t.Fatal(err)
		}
		now := clk.Now().Truncate(time.Microsecond)
		old := now.Add(-3 * time.Minute)
		cutoff := now.Add(-2 * time.Minute)
		put := func(d Device, state VerdictState, at time.Time) {
			t.Helper()
			if err := s.PutAttestationState(ctx, "acme", AttestationState{DeviceID: d.ID, State: state, VerdictAt: at}); err != nil {
				t.Fatal(err)
			}
		}
		// Devices list in creation order.
		mustDevice := func(t *testing.T, s *Store, tenant, fleet, ek string) Device {
			t.Helper()
			clk.Advance(time.Millisecond)
			return mustDevice(t, s, tenant, fleet, ek)
		}
		oldTrusted := mustDevice(t, s, "acme", fx.fleet.ID, "ek1")
		put(oldTrusted, VerdictTrusted, old)
		oldUntrusted := mustDevice(t, s, "acme", lab.ID, "ek2")
		put(oldUntrusted, VerdictUntrusted, old)
		alreadyStale := mustDevice(t, s, "acme", fx.fleet.ID, "ek3")
		put(alreadyStale, VerdictStale, old)
		fresh := mustDevice(t, s, "acme", fx.fleet.ID, "ek4")
		put(fresh, VerdictTrusted, now)
		atCutoff := mustDevice(t, s, "acme", fx.fleet.ID, "ek5")
		put(atCutoff, VerdictTrusted, cutoff)
		never := mustDevice(t, s, "acme", fx.fleet.ID, "ek6")
		challenged := mustDevice(t, s, "acme", lab.ID, "ek7")
		if _, err := s.IssueNonce(ctx, "acme", challenged.ID, time.Minute); err != nil {
			t.Fatal(err)
		}

		ids := func(states []AttestationState) []string {
			var out []string
			for _, st := range states {
				out = append(out, st.DeviceID)
			}
			return out
		}
		for _, tc := range []struct {
			name string
			f    AttestationFilter
			want []Device
		}{
			{"all", AttestationFilter{}, []Device{oldTrusted, oldUntrusted, alreadyStale, fresh, atCutoff, never, challenged}},
			{"fleet", AttestationFilter{FleetID: lab.ID}, []Device{oldUntrusted, challenged}},
			{"stale sweep", AttestationFilter{States: []VerdictState{VerdictTrusted, VerdictUntrusted}, VerdictBefore: cutoff},
				[]Device{oldTrusted, oldUntrusted}},
			{"stale sweep of a fleet", AttestationFilter{FleetID: fx.fleet.ID, States: []VerdictState{VerdictTrusted, VerdictUntrusted}, VerdictBefore: cutoff},
				[]Device{oldTrusted}},
			{"unknown includes never attested", AttestationFilter{States: []VerdictState{VerdictUnknown}}, []Device{never, challenged}},
			{"untrusted or stale", AttestationFilter{States: []VerdictState{VerdictUntrusted, VerdictStale}}, []Device{oldUntrusted, alreadyStale}},
			{"old verdicts of any state", AttestationFilter{VerdictBefore: cutoff}, []Device{oldTrusted, oldUntrusted, alreadyStale}},
			{"unknown fleet", AttestationFilter{FleetID: NewID(PrefixFleet)}, nil},
		} {
			got, err := s.ListAttestationStates(ctx, "acme", tc.f)
			var want []string
			for _, d := range tc.want {
				want = append(want, d.ID)
			}
			if err != nil || !reflect.DeepEqual(ids(got), want) {
				t.Errorf("%s: ListAttestationStates = %v, %v; want %v", tc.name, ids(got), err, want)
			}
		}

		// Rows carry their fleet and read like GetAttestationState.
		all, _ := s.ListAttestationStates(ctx, "acme", AttestationFilter{})
		for _, st := range all {
			one, err := s.GetAttestationState(ctx, "acme", st.DeviceID)
			if err != nil || !reflect.DeepEqual(one, st) {
				t.Errorf("list row %+v, Get %+v, %v", st, one, err)
			}
		}
		if all[1].FleetID != lab.ID || all[5].State != VerdictUnknown || !all[5].VerdictAt.IsZero() {
			t.Errorf("rows: %+v, %+v", all[1], all[5])
		}
	})
}

// TestAttestationCascade: deleting a device deletes its attestation rows and
// only its own.
func TestAttestationCascade(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		doomed := mustDevice(t, s, "acme", fx.fleet.ID, "ek1")
		kept := mustDevice(t, s, "acme", fx.fleet.ID, "ek2")
		for _, d := range []Device{doomed, kept} {
			if err := s.PutAttestationState(ctx, "acme", AttestationState{DeviceID: d.ID, State: VerdictTrusted, VerdictAt: clk.Now(),
				BaselinePCRs: map[int][]byte{0: {1}}}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.AppendAttestationHistory(ctx, "acme", AttestationRecord{DeviceID: d.ID, State: VerdictTrusted, VerdictAt: clk.Now()}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.IssueNonce(ctx, "acme", d.ID, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		tables := []string{"attestation_state", "attestation_history", "attestation_history_heads", "attestation_nonces"}
		for _, table := range tables {
			if n := countRows(t, s, table, "acme", doomed.ID); n != 1 {
				t.Fatalf("%s has %d rows of the device before deleting it", table, n)
			}
		}
		if err := s.DeleteDevice(ctx, "acme", doomed.ID); err != nil {
			t.Fatal(err)
		}
		for _, table := range tables {
			if n := countRows(t, s, table, "acme", doomed.ID); n != 0 {
				t.Errorf("%s keeps %d rows of the deleted device", table, n)
			}
			if n := countRows(t, s, table, "acme", kept.ID); n != 1 {
				t.Errorf("%s has %d rows of the other device, want 1", table, n)
			}
		}
		// The TPM enrolls again with a clean slate.
		again := mustDevice(t, s, "acme", fx.fleet.ID, "ek1")
		if st, err := s.GetAttestationState(ctx, "acme", again.ID); err != nil || st.State != VerdictUnknown || st.BaselinePCRs != nil {
			t.Errorf("state of the re-enrolled device = %+v, %v", st, err)
		}
		if r, err := s.AppendAttestationHistory(ctx, "acme", AttestationRecord{DeviceID: again.ID, State: VerdictTrusted, VerdictAt: clk.Now()}); err != nil || r.Seq != 1 {
			t.Errorf("first history entry of the re-enrolled device = %+v, %v", r, err)
		}
	})
}

// createV1Database makes the database dsn names look as a binary that
// knew only migration 0001 left it, with one tenant, fleet and device.
func createV1Database(t *testing.T, backend, dsn string) (device string) {
	t.Helper()
	ctx := context.Background()
	d, target, err := parseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	driver := map[dialect]string{dialectSQLite: "sqlite", dialectPostgres: "pgx"}[d]
	db, err := sql.Open(driver, target)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ms, err := loadMigrations(d)
	if err != nil {
		t.Fatal(err)
	}
	if ms[0].version != 1 {
		t.Fatalf("first migration is %s", ms[0].name)
	}
	device = NewID(PrefixDevice)
	fleet := NewID(PrefixFleet)
	for _, q := range []string{
		`CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)`,
		ms[0].sql,
		`INSERT INTO schema_migrations (version, name, applied_at) VALUES (1, '` + ms[0].name + `', 1)`,
		`INSERT INTO tenants (id, name, created_at) VALUES ('acme', 'Acme', 1)`,
		`INSERT INTO fleets (id, tenant_id, name, policy, created_at) VALUES ('` + fleet + `', 'acme', 'edge', '{}', 1)`,
		`INSERT INTO devices (id, tenant_id, fleet_id, name, labels, device_type, tpm_kind, ek_fingerprint, status, created_at)
			VALUES ('` + device + `', 'acme', '` + fleet + `', 'old', '{}', 'jetson-orin', 'hardware', 'ek-old', 'enrolled', 1)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: build a version 1 database: %v", backend, err)
		}
	}
	return device
}

func TestMigrationToAttestation(t *testing.T) {
	t.Parallel()
	if v := SchemaVersion(); v < 2 {
		t.Fatalf("SchemaVersion() = %d, want at least 2", v)
	}
	applied := func(t *testing.T, s *Store) []string {
		t.Helper()
		rows, err := s.writeDB.QueryContext(context.Background(), `SELECT version, name FROM schema_migrations ORDER BY version`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []string
		for rows.Next() {
			var v int64
			var name string
			if err := rows.Scan(&v, &name); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprint(v, " ", name))
		}
		return out
	}
	// Every migration is applied, in order, once.
	ms, err := loadMigrations(dialectSQLite)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, m := range ms {
		want = append(want, fmt.Sprint(m.version, " ", m.name))
	}
	if int64(len(want)) != SchemaVersion() || want[1] != "2 0002_attestation.sql" {
		t.Fatalf("migrations %v, schema version %d", want, SchemaVersion())
	}
	for _, b := range backends {
		t.Run(b+"/from version 1", func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dsn := backendDSN(t, b)
			device := createV1Database(t, b, dsn)
			s := openStore(t, dsn)
			if got := applied(t, s); !reflect.DeepEqual(got, want) {
				t.Fatalf("schema_migrations = %v, want %v", got, want)
			}
			// The old device is intact and usable by the new tables.
			d, err := s.GetDevice(ctx, "acme", device)
			if err != nil || d.Name != "old" || d.Quarantined || d.KEMPublic != nil {
				t.Fatalf("old device after migrating: %+v, %v", d, err)
			}
			if st, err := s.GetAttestationState(ctx, "acme", device); err != nil || st.State != VerdictUnknown {
				t.Fatalf("state of the old device: %+v, %v", st, err)
			}
			if err := s.SetQuarantined(ctx, "acme", device, true); err != nil {
				t.Fatal(err)
			}
			if _, err := s.AppendAttestationHistory(ctx, "acme", AttestationRecord{DeviceID: device, State: VerdictUntrusted, VerdictAt: time.Now()}); err != nil {
				t.Fatal(err)
			}
			s.Close()
			// Reopening applies nothing more.
			s2 := openStore(t, dsn)
			if got := applied(t, s2); !reflect.DeepEqual(got, want) {
				t.Fatalf("after reopening schema_migrations = %v", got)
			}
			if q, err := s2.Quarantined(ctx, "acme", device); err != nil || !q {
				t.Fatalf("quarantine after reopening = %v, %v", q, err)
			}
		})
		t.Run(b+"/fresh", func(t *testing.T) {
			t.Parallel()
			s := openStore(t, backendDSN(t, b))
			if got := applied(t, s); !reflect.DeepEqual(got, want) {
				t.Fatalf("schema_migrations of a fresh database = %v, want %v", got, want)
			}
		})
	}
}
