package store

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestAuditAppendAndList(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		mustFixture(t, s, "acme")
		mustFixture(t, s, "beta")
		_, err := s.LastAudit(ctx, "acme")
		wantErr(t, "empty chain", err, ErrNotFound)

		at := time.Date(2031, 5, 6, 7, 8, 9, 123456000, time.FixedZone("CEST", 2*3600))
		var appended []AuditRow
		for i := range 5 {
			r, err := s.AppendAudit(ctx, "acme", chainEntry("acme", fmt.Sprint("act", i), at))
			if err != nil {
				t.Fatal(err)
			}
			appended = append(appended, r)
		}
		if _, err := s.AppendAudit(ctx, "beta", chainEntry("beta", "other", at)); err != nil {
			t.Fatal(err)
		}

		var got []AuditRow
		for r, err := range s.ListAudit(ctx, "acme", 0, 0) {
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, r)
		}
		if len(got) != 5 {
			t.Fatalf("ListAudit returned %d rows, want 5", len(got))
		}
		for i, r := range got {
			w := appended[i]
			if r.Seq != int64(i+1) || r.Tenant != "acme" || !r.Time.Equal(at) || r.Time.Location() != time.UTC ||
				r.Actor != w.Actor || r.Action != w.Action || r.Target != w.Target || r.RequestID != w.RequestID ||
				!bytes.Equal(r.Details, []byte(`{"b":1,  "a":[2]}`)) || !bytes.Equal(r.Hash, w.Hash) || !bytes.Equal(r.PrevHash, w.PrevHash) {
				t.Errorf("row %d = %+v, want %+v", i, r, w)
			}
			if i > 0 && !bytes.Equal(r.PrevHash, got[i-1].Hash) {
				t.Errorf("row %d does not chain to row %d", i, i-1)
			}
		}

		// Paging.
		var seqs []int64
		for r, err := range s.ListAudit(ctx, "acme", 2, 2) {
			if err != nil {
				t.Fatal(err)
			}
			seqs = append(seqs, r.Seq)
		}
		if fmt.Sprint(seqs) != "[3 4]" {
			t.Errorf("ListAudit(after 2, limit 2) = %v, want [3 4]", seqs)
		}
		// Stopping early is fine.
		for range s.ListAudit(ctx, "acme", 0, 0) {
			break
		}
		if last, err := s.LastAudit(ctx, "acme"); err != nil || last.Seq != 5 {
			t.Errorf("LastAudit = %d, %v", last.Seq, err)
		}
		if last, err := s.LastAudit(ctx, "beta"); err != nil || last.Seq != 1 {
			t.Errorf("beta's chain is separate: LastAudit = %d, %v", last.Seq, err)
		}

		// Entries that do not continue the chain are refused, and refusing
		// one does not advance the sequence.
		for _, tc := range []struct {
			name  string
			build func(prev *AuditRow) AuditRow
		}{
			{"wrong seq", func(prev *AuditRow) AuditRow {
				r := chainEntry("acme", "x", at)(prev)
				r.Seq++
				return r
			}},
			{"broken link", func(prev *AuditRow) AuditRow {
				r := chainEntry("acme", "x", at)(prev)
				r.PrevHash = []byte("forged")
				return r
			}},
			{"other tenant", chainEntry("beta", "x", at)},
			{"no hash", func(prev *AuditRow) AuditRow {
				r := chainEntry("acme", "x", at)(prev)
				r.Hash = nil
				return r
			}},
			{"nanoseconds", chainEntry("acme", "x", at.Add(1))},
			{"no time", chainEntry("acme", "x", time.Time{})},
		} {
			_, err := s.AppendAudit(ctx, "acme", tc.build)
			wantErr(t, tc.name, err, ErrInvalid)
		}
		_, err = s.AppendAudit(ctx, "ghost", chainEntry("ghost", "x", at))
		wantErr(t, "unknown tenant", err, ErrNotFound)
		if r, err := s.AppendAudit(ctx, "acme", chainEntry("acme", "after", at)); err != nil || r.Seq != 6 {
			t.Errorf("append after refusals: seq %d, %v; want 6", r.Seq, err)
		}
	})
}

// TestAuditConcurrentAppends: N goroutines append to one tenant at once;
// the chain must come out contiguous, without duplicates, and linked.
func TestAuditConcurrentAppends(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		const workers, each = 8, 8
		var wg sync.WaitGroup
		errs := make(chan error, workers*each)
		start := make(chan struct{})
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := range each {
					action := fmt.Sprintf("w%d-%d", w, i)
					var err error
					if i%2 == 0 {
						_, err = s.AppendAudit(ctx, "acme", chainEntry("acme", action, time.Unix(int64(i), 0)))
					} else {
						// Mutation plus audit in one transaction.
						err = s.WithTx(ctx, func(tx *Tx) error {
							if _, err := tx.CreateDevice(ctx, "acme", Device{FleetID: fx.fleet.ID, TPMKind: TPMNone}); err != nil {
								return err
							}
							_, err := tx.AppendAudit(ctx, "acme", chainEntry("acme", action, time.Unix(int64(i), 0)))
							return err
						})
					}
					errs <- err
				}
			}()
		}
		close(start)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		seen := map[string]bool{}
		var prev *AuditRow
		n := int64(0)
		for r, err := range s.ListAudit(ctx, "acme", 0, 0) {
			if err != nil {
				t.Fatal(err)
			}
			n++
			if r.Seq != n {
				t.Fatalf("seq %d at position %d: gap or duplicate", r.Seq, n)
			}
			if seen[r.Action] {
				t.Fatalf("action %s appended twice", r.Action)
			}
			seen[r.Action] = true
			if prev != nil && !bytes.Equal(r.PrevHash, prev.Hash) {
				t.Fatalf("entry %d does not link to entry %d", r.Seq, prev.Seq)
			}
			prev = &r
		}
		if n != workers*each {
			t.Fatalf("%d entries, want %d", n, workers*each)
		}
	})
}
