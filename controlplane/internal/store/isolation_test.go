package store

import (
	"context"
	"testing"
	"time"
)

// TestTenantIsolation: tenant "beta" must not see or touch anything of
// tenant "acme" by id — every such call is ErrNotFound and changes nothing —
// and beta's lists never show acme's rows.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	forEachBackendClock(t, func(t *testing.T, s *Store, clk *clock) {
		ctx := context.Background()
		a := mustFixture(t, s, "acme")
		b := mustFixture(t, s, "beta")
		dev := mustDevice(t, s, "acme", a.fleet.ID, "ek-acme")
		key, _, err := s.CreateAPIKey(ctx, "acme", APIKey{OperatorID: a.operator.ID, Role: RoleAdmin, Name: "k"})
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := s.CreateEnrollmentToken(ctx, "acme", EnrollmentToken{FleetID: a.fleet.ID, ExpiresAt: clk.Now().AddDate(1, 0, 0)})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.RecordCertificate(ctx, "acme", IssuedCert{Serial: "abc", DeviceID: dev.ID, NotAfter: clk.Now().AddDate(1, 0, 0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateCA(ctx, "acme", CA{CertDER: []byte{1}, WrappedKey: []byte{2}}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AppendAudit(ctx, "acme", chainEntry("acme", "x", time.Unix(1, 0))); err != nil {
			t.Fatal(err)
		}

		name := "stolen"
		role := RoleViewer
		labels := map[string]string{"owner": "beta"}
		policy := FleetPolicy{AllowNoTPM: true}
		const beta = "beta"
		for _, tc := range []struct {
			name string
			call func() error
		}{
			{"GetFleet", func() error { _, err := s.GetFleet(ctx, beta, a.fleet.ID); return err }},
			{"GetFleetByName", func() error { _, err := s.GetFleetByName(ctx, beta, "nope"); return err }},
			{"UpdateFleet", func() error {
				_, err := s.UpdateFleet(ctx, beta, a.fleet.ID, FleetUpdate{Name: &name, Policy: &policy})
				return err
			}},
			{"DeleteFleet", func() error { return s.DeleteFleet(ctx, beta, a.fleet.ID) }},
			{"GetDevice", func() error { _, err := s.GetDevice(ctx, beta, dev.ID); return err }},
			{"GetDeviceByEK", func() error { _, err := s.GetDeviceByEK(ctx, beta, "ek-acme"); return err }},
			{"UpdateDevice", func() error {
				_, err := s.UpdateDevice(ctx, beta, dev.ID, DeviceUpdate{Name: &name, Labels: labels})
				return err
			}},
			{"SetDevicePresence", func() error { return s.SetDevicePresence(ctx, beta, dev.ID, true, time.Now()) }},
			{"RevokeDevice", func() error { _, err := s.RevokeDevice(ctx, beta, dev.ID); return err }},
			{"DeleteDevice", func() error { return s.DeleteDevice(ctx, beta, dev.ID) }},
			{"CreateDevice in acme's fleet", func() error {
				_, err := s.CreateDevice(ctx, beta, Device{FleetID: a.fleet.ID, TPMKind: TPMNone})
				return err
			}},
			{"GetEnrollmentToken", func() error { _, err := s.GetEnrollmentToken(ctx, beta, tok.ID); return err }},
			{"DeleteEnrollmentToken", func() error { return s.DeleteEnrollmentToken(ctx, beta, tok.ID) }},
			{"CreateEnrollmentToken for acme's fleet", func() error {
				_, _, err := s.CreateEnrollmentToken(ctx, beta, EnrollmentToken{FleetID: a.fleet.ID, ExpiresAt: clk.Now().AddDate(1, 0, 0)})
				return err
			}},
			{"GetAPIKey", func() error { _, err := s.GetAPIKey(ctx, beta, key.ID); return err }},
			{"RevokeAPIKey", func() error { return s.RevokeAPIKey(ctx, beta, key.ID) }},
			{"CreateAPIKey for acme's operator", func() error {
				_, _, err := s.CreateAPIKey(ctx, beta, APIKey{OperatorID: a.operator.ID, Role: RoleViewer})
				return err
			}},
			{"GetOperator", func() error { _, err := s.GetOperator(ctx, beta, a.operator.ID); return err }},
			{"UpdateOperator", func() error {
				_, err := s.UpdateOperator(ctx, beta, a.operator.ID, OperatorUpdate{Role: &role})
				return err
			}},
			{"DeleteOperator", func() error { return s.DeleteOperator(ctx, beta, a.operator.ID) }},
			{"RecordCertificate for acme's device", func() error {
				return s.RecordCertificate(ctx, beta, IssuedCert{Serial: "def", DeviceID: dev.ID, NotAfter: time.Now()})
			}},
			{"RevokeCertificate", func() error { return s.RevokeCertificate(ctx, beta, "abc") }},
			{"IsRevoked", func() error { _, err := s.IsRevoked(ctx, beta, "abc"); return err }},
		} {
			wantErr(t, tc.name, tc.call(), ErrNotFound)
		}

		// beta's lists contain only beta's rows.
		if fl, _ := s.ListFleets(ctx, beta); len(fl) != 1 || fl[0].ID != b.fleet.ID {
			t.Errorf("beta's fleets: %+v", fl)
		}
		for _, f := range []DeviceFilter{{}, {FleetID: a.fleet.ID}} {
			if ds, _ := s.ListDevices(ctx, beta, f); len(ds) != 0 {
				t.Errorf("beta lists devices %+v with filter %+v", ds, f)
			}
		}
		if ts, _ := s.ListEnrollmentTokens(ctx, beta, a.fleet.ID); len(ts) != 0 {
			t.Errorf("beta lists tokens %+v", ts)
		}
		if ks, _ := s.ListAPIKeys(ctx, beta, a.operator.ID); len(ks) != 0 {
			t.Errorf("beta lists keys %+v", ks)
		}
		if ops, _ := s.ListOperators(ctx, beta); len(ops) != 1 || ops[0].ID != b.operator.ID {
			t.Errorf("beta's operators: %+v", ops)
		}
		if rs, _ := s.RevokedSerials(ctx, beta); len(rs) != 0 {
			t.Errorf("beta's revoked serials: %+v", rs)
		}
		_, err = s.GetCA(ctx, beta)
		wantErr(t, "beta's CA", err, ErrNotFound)
		for r, err := range s.ListAudit(ctx, beta, 0, 0) {
			t.Errorf("beta's audit shows %+v, %v", r, err)
		}

		// And acme's rows are untouched.
		if f, _ := s.GetFleet(ctx, "acme", a.fleet.ID); f.Name != "edge" || f.Policy.AllowNoTPM {
			t.Errorf("acme's fleet changed: %+v", f)
		}
		if d, _ := s.GetDevice(ctx, "acme", dev.ID); d.Name != dev.Name || d.Status != DeviceEnrolled || d.Online {
			t.Errorf("acme's device changed: %+v", d)
		}
		if k, _ := s.GetAPIKey(ctx, "acme", key.ID); !k.RevokedAt.IsZero() {
			t.Errorf("acme's key revoked by beta")
		}
		if op, _ := s.GetOperator(ctx, "acme", a.operator.ID); op.Role != RoleAdmin {
			t.Errorf("acme's operator changed: %+v", op)
		}
		if _, err := s.GetEnrollmentToken(ctx, "acme", tok.ID); err != nil {
			t.Errorf("acme's token: %v", err)
		}
		if revoked, err := s.IsRevoked(ctx, "acme", "abc"); err != nil || revoked {
			t.Errorf("acme's certificate: revoked=%v, %v", revoked, err)
		}
	})
}
