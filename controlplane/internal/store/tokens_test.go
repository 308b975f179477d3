package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestEnrollmentTokens(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		tok, secret, err := s.CreateEnrollmentToken(ctx, "acme", EnrollmentToken{FleetID: fx.fleet.ID, CreatedBy: fx.operator.ID, ExpiresAt: clk.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(secret, "tgt_"+tok.ID+"_") {
			t.Fatalf("presented token %q", secret)
		}
		got, err := s.GetEnrollmentToken(ctx, "acme", tok.ID)
		if err != nil || got != tok {
			t.Fatalf("GetEnrollmentToken = %+v, %v; want %+v", got, err, tok)
		}

		// Lookup does not consume.
		for range 2 {
			if l, err := s.LookupEnrollmentToken(ctx, secret); err != nil || l.FleetID != fx.fleet.ID || l.Tenant != "acme" {
				t.Fatalf("LookupEnrollmentToken = %+v, %v", l, err)
			}
		}

		devID := NewID(PrefixDevice)
		used, err := s.ConsumeEnrollmentToken(ctx, secret, devID)
		if err != nil || used.UsedByDevice != devID || used.UsedAt.IsZero() || used.Tenant != "acme" || used.FleetID != fx.fleet.ID {
			t.Fatalf("ConsumeEnrollmentToken = %+v, %v", used, err)
		}
		_, err = s.ConsumeEnrollmentToken(ctx, secret, NewID(PrefixDevice))
		wantErr(t, "second use", err, ErrTokenUsed)
		_, err = s.LookupEnrollmentToken(ctx, secret)
		wantErr(t, "lookup of a used token", err, ErrTokenUsed)
		if stored, _ := s.GetEnrollmentToken(ctx, "acme", tok.ID); stored.UsedByDevice != devID || !stored.UsedAt.Equal(used.UsedAt) {
			t.Errorf("stored token after use = %+v", stored)
		}

		// Expiry, by the store's clock.
		_, expiring, _ := s.CreateEnrollmentToken(ctx, "acme", EnrollmentToken{FleetID: fx.fleet.ID, ExpiresAt: clk.Now().Add(time.Minute)})
		clk.Advance(time.Minute)
		_, err = s.ConsumeEnrollmentToken(ctx, expiring, devID)
		wantErr(t, "expired token", err, ErrTokenExpired)
		_, err = s.LookupEnrollmentToken(ctx, expiring)
		wantErr(t, "lookup of an expired token", err, ErrTokenExpired)

		_, fresh, _ := s.CreateEnrollmentToken(ctx, "acme", EnrollmentToken{FleetID: fx.fleet.ID, ExpiresAt: clk.Now().Add(time.Hour)})
		wrong := fresh[:len(fresh)-1] + map[bool]string{true: "b", false: "a"}[strings.HasSuffix(fresh, "a")]
		for name, presented := range map[string]string{
			"unknown":      "tgt_" + NewID(PrefixToken) + "_" + fresh[len(fresh)-52:],
			"wrong secret": wrong,
			"malformed":    "not-a-token",
			"empty":        "",
			"api key form": "tgk" + fresh[3:],
		} {
			_, err := s.ConsumeEnrollmentToken(ctx, presented, devID)
			wantErr(t, name, err, ErrNotFound)
		}
		// The failed attempts did not burn the right token.
		if _, err := s.ConsumeEnrollmentToken(ctx, fresh, devID); err != nil {
			t.Fatalf("consume after failed attempts: %v", err)
		}

		for _, tc := range []struct {
			name string
			tok  EnrollmentToken
			want error
		}{
			{"no expiry", EnrollmentToken{FleetID: fx.fleet.ID}, ErrInvalid},
			{"expired at birth", EnrollmentToken{FleetID: fx.fleet.ID, ExpiresAt: clk.Now()}, ErrInvalid},
			{"unknown fleet", EnrollmentToken{FleetID: NewID(PrefixFleet), ExpiresAt: clk.Now().Add(time.Hour)}, ErrNotFound},
		} {
			_, _, err := s.CreateEnrollmentToken(ctx, "acme", tc.tok)
			wantErr(t, tc.name, err, tc.want)
		}

		list, err := s.ListEnrollmentTokens(ctx, "acme", fx.fleet.ID)
		if err != nil || len(list) != 3 {
			t.Fatalf("ListEnrollmentTokens = %d, %v; want 3", len(list), err)
		}
		if err := s.DeleteEnrollmentToken(ctx, "acme", tok.ID); err != nil {
			t.Fatal(err)
		}
		wantErr(t, "delete twice", s.DeleteEnrollmentToken(ctx, "acme", tok.ID), ErrNotFound)
	})
}

// TestEnrollmentTokenRace: many enrollments race for one token; exactly one
// wins, the rest see ErrTokenUsed.
func TestEnrollmentTokenRace(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		for round := range 3 {
			_, secret, err := s.CreateEnrollmentToken(ctx, "acme", EnrollmentToken{FleetID: fx.fleet.ID, ExpiresAt: time.Now().AddDate(10, 0, 0)})
			if err != nil {
				t.Fatal(err)
			}
			const n = 16
			start := make(chan struct{})
			results := make(chan error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					// Half consume inside a transaction that also creates the
					// device, as enrollment does.
					if i%2 == 0 {
						_, err := s.ConsumeEnrollmentToken(ctx, secret, NewID(PrefixDevice))
						results <- err
						return
					}
					results <- s.WithTx(ctx, func(tx *Tx) error {
						d, err := tx.CreateDevice(ctx, "acme", Device{FleetID: fx.fleet.ID, TPMKind: TPMHardware, EKFingerprint: fmt.Sprintf("ek-%d-%d", round, i)})
						if err != nil {
							return err
						}
						_, err = tx.ConsumeEnrollmentToken(ctx, secret, d.ID)
						return err
					})
				}()
			}
			close(start)
			wg.Wait()
			close(results)
			wins := 0
			for err := range results {
				switch {
				case err == nil:
					wins++
				case !errors.Is(err, ErrTokenUsed):
					t.Errorf("loser got %v, want ErrTokenUsed", err)
				}
			}
			if wins != 1 {
				t.Fatalf("round %d: %d consumers won, want exactly 1", round, wins)
			}
		}
		// Losing transactions rolled back their devices.
		devices, _ := s.ListDevices(ctx, "acme", DeviceFilter{})
		if len(devices) > 3 {
			t.Errorf("%d devices after 3 races, want at most 3", len(devices))
		}
	})
}
