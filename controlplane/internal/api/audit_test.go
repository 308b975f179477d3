package api_test

import (
	"database/sql"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/api"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/audit"
)

// TestAuditChain: after a sequence of mutations (some concurrent) the
// chain served by GET /api/v1/audit verifies, carries request ids and no
// secrets, and a row edited or deleted in the database is detected.
func TestAuditChain(t *testing.T) {
	t.Parallel()
	c := newClient(t, "")
	admin := c.env.AdminKey
	o := makeObjects(t, c)
	name := "renamed"
	c.call("PATCH", "/api/v1/devices/{id}", "/api/v1/devices/"+o.device.ID, admin, api.DevicePatch{Name: &name}, 200, nil)
	c.call("POST", "/api/v1/devices/{id}/revoke", "/api/v1/devices/"+o.device.ID+"/revoke", admin, nil, 200, nil)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			st, _, raw := c.env.Do("POST", "/api/v1/fleets", admin, api.FleetCreate{Name: "f" + string(rune('a'+i))})
			if st != 201 {
				t.Errorf("concurrent fleet create: %d %s", st, raw)
			}
		})
	}
	wg.Wait()

	// A caller-chosen request id lands in the entry.
	st, hdr, raw := doWithRequestID(t, c, "POST", "/api/v1/fleets", admin, `{"name":"traced"}`, "trace-42.x_Y")
	if st != 201 || hdr.Get("X-Request-Id") != "trace-42.x_Y" {
		t.Fatalf("traced create: %d %s, request id %q", st, raw, hdr.Get("X-Request-Id"))
	}

	entries := fetchAudit(t, c)
	rep, err := audit.Verify(entries, audit.VerifyOptions{Tenant: "acme"})
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if want := 4 + 2 + 1 + 2 + 8 + 1; int(rep.Entries) != want { // makeObjects: 4, a publisher and a package, a rollout
		t.Errorf("%d entries, want %d", rep.Entries, want)
	}
	last := entries[len(entries)-1]
	if last.Action != "fleet.create" || last.RequestID != "trace-42.x_Y" || !strings.Contains(string(last.Details), `"name":"traced"`) {
		t.Errorf("last entry = %+v", last)
	}
	for _, e := range entries {
		if strings.Contains(string(e.Details), o.key.Key) || strings.Contains(string(e.Details), o.token.Token) || strings.Contains(string(e.Details), "tgt_") {
			t.Errorf("entry %d holds a secret: %s", e.Seq, e.Details)
		}
	}

	// Tamper with the stored rows behind the API's back.
	db, err := sql.Open("sqlite", strings.TrimPrefix(c.env.DSN, "sqlite://"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE audit_log SET actor = 'key-someoneelse' WHERE tenant_id = 'acme' AND seq = 3`); err != nil {
		t.Fatal(err)
	}
	_, err = audit.Verify(fetchAudit(t, c), audit.VerifyOptions{Tenant: "acme"})
	var ve *audit.VerifyError
	if !errors.Is(err, audit.ErrHashMismatch) || !errors.As(err, &ve) || ve.Seq != 3 {
		t.Errorf("edited actor: Verify = %v, want ErrHashMismatch at seq 3", err)
	}
	if _, err := db.Exec(`UPDATE audit_log SET actor = ? WHERE tenant_id = 'acme' AND seq = 3`, entries[2].Actor); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(fetchAudit(t, c), audit.VerifyOptions{Tenant: "acme"}); err != nil {
		t.Fatalf("restored chain: %v", err)
	}
	if _, err := db.Exec(`UPDATE audit_log SET details = '{"name":"other"}' WHERE tenant_id = 'acme' AND seq = 5`); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(fetchAudit(t, c), audit.VerifyOptions{Tenant: "acme"}); !errors.Is(err, audit.ErrHashMismatch) {
		t.Errorf("edited details: Verify = %v, want ErrHashMismatch", err)
	}
	if _, err := db.Exec(`DELETE FROM audit_log WHERE tenant_id = 'acme' AND seq = 7`); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Verify(fetchAudit(t, c)[5:], audit.VerifyOptions{Tenant: "acme"}); !errors.Is(err, audit.ErrSequence) {
		t.Errorf("deleted entry: Verify = %v, want ErrSequence", err)
	}
	// Entries after the tampered ones still append and chain to the head.
	c.call("POST", "/api/v1/fleets", "/api/v1/fleets", admin, api.FleetCreate{Name: "after"}, 201, nil)
}

func fetchAudit(t *testing.T, c *client) []audit.Entry {
	t.Helper()
	var page api.AuditPage
	c.call("GET", "/api/v1/audit", "/api/v1/audit?limit=1000", c.env.AdminKey, nil, 200, &page)
	return page.Entries
}

// TestRowEntryRoundTrip: the conversion helpers are inverse, and a row
// with malformed hashes is refused.
func TestRowEntryRoundTrip(t *testing.T) {
	t.Parallel()
	c := newClient(t, "")
	makeObjects(t, c)
	for _, e := range fetchAudit(t, c) {
		back, err := api.EntryFromRow(api.RowFromEntry(e))
		if err != nil {
			t.Fatal(err)
		}
		if back.Hash != e.Hash || back.PrevHash != e.PrevHash || back.Seq != e.Seq || !back.Time.Equal(e.Time) || string(back.Details) != string(e.Details) {
			t.Errorf("round trip changed entry %d: %+v → %+v", e.Seq, e, back)
		}
	}
	if _, err := api.EntryFromRow(store.AuditRow{Tenant: "acme", Seq: 1, Hash: []byte{1}, PrevHash: make([]byte, 32)}); err == nil {
		t.Error("EntryFromRow accepted a 1-byte hash")
	}
	if _, err := api.EntryFromRow(store.AuditRow{Tenant: "acme", Seq: 0, Hash: make([]byte, 32), PrevHash: make([]byte, 32)}); err == nil {
		t.Error("EntryFromRow accepted seq 0")
	}
}
