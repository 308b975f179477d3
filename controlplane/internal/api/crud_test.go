package api_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/api"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/audit"
)

// TestCRUD walks every route of this package through its happy path, on
// SQLite and on PostgreSQL, validating every answer against the OpenAPI
// document; it fails if a route was never exercised.
func TestCRUD(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			c := newClient(t, backendDSN(t, b))
			runCRUD(t, c)
			for _, rt := range api.Routes() {
				if !c.covered[rt.Method+" "+rt.Path] {
					t.Errorf("route %s %s not exercised by the happy-path test", rt.Method, rt.Path)
				}
			}
		})
	}
}

func runCRUD(t *testing.T, c *client) {
	ctx := context.Background()
	admin := c.env.AdminKey
	env := c.env

	// Discovery.
	var doc map[string]any
	c.call("GET", "/api/v1/openapi.json", "/api/v1/openapi.json", "", nil, 200, &doc)
	if doc["openapi"] != "3.1.0" {
		t.Errorf("openapi = %v", doc["openapi"])
	}
	var me api.Whoami
	c.call("GET", "/api/v1/whoami", "/api/v1/whoami", admin, nil, 200, &me)
	if me.Tenant != "acme" || me.Role != "admin" || !strings.HasPrefix(me.KeyID, "key-") || !strings.HasPrefix(me.OperatorID, "op-") {
		t.Errorf("whoami = %+v", me)
	}
	var ca api.CAInfo
	c.call("GET", "/api/v1/ca", "/api/v1/ca", admin, nil, 200, &ca)
	if ca.CAHash != env.CA.CAHash() || !strings.Contains(ca.PlatformCAPEM, "BEGIN CERTIFICATE") || !strings.Contains(ca.TenantCAPEM, "BEGIN CERTIFICATE") || ca.PlatformCAPEM == ca.TenantCAPEM {
		t.Errorf("ca = %+v", ca)
	}

	// Operators.
	var bob api.Operator
	c.call("POST", "/api/v1/operators", "/api/v1/operators", admin, api.OperatorCreate{Name: "bob", Role: "operator"}, 201, &bob)
	if bob.Name != "bob" || bob.Role != "operator" || bob.Disabled || !store.ValidID(store.PrefixOperator, bob.ID) {
		t.Errorf("created operator = %+v", bob)
	}
	c.wantError("POST", "/api/v1/operators", "/api/v1/operators", admin, api.OperatorCreate{Name: "bob", Role: "viewer"}, 409, "CONFLICT")
	var ops []api.Operator
	c.call("GET", "/api/v1/operators", "/api/v1/operators", admin, nil, 200, &ops)
	if len(ops) != 2 {
		t.Errorf("operators = %+v", ops)
	}
	var got api.Operator
	c.call("GET", "/api/v1/operators/{id}", "/api/v1/operators/"+bob.ID, admin, nil, 200, &got)
	if got != bob {
		t.Errorf("get operator = %+v, want %+v", got, bob)
	}
	viewer := "viewer"
	c.call("PATCH", "/api/v1/operators/{id}", "/api/v1/operators/"+bob.ID, admin, api.OperatorPatch{Role: &viewer}, 200, &got)
	if got.Role != "viewer" {
		t.Errorf("patched operator = %+v", got)
	}
	yes := true
	c.call("PATCH", "/api/v1/operators/{id}", "/api/v1/operators/"+bob.ID, admin, api.OperatorPatch{Disabled: &yes}, 200, &got)
	if !got.Disabled || got.Role != "viewer" {
		t.Errorf("disabled operator = %+v", got)
	}
	c.wantError("PATCH", "/api/v1/operators/{id}", "/api/v1/operators/"+bob.ID, admin, map[string]any{}, 400, "BAD_REQUEST")
	c.call("DELETE", "/api/v1/operators/{id}", "/api/v1/operators/"+bob.ID, admin, nil, 204, nil)
	c.wantError("GET", "/api/v1/operators/{id}", "/api/v1/operators/"+bob.ID, admin, nil, 404, "NOT_FOUND")
	// The last enabled admin cannot demote, disable or delete itself.
	c.wantError("PATCH", "/api/v1/operators/{id}", "/api/v1/operators/"+me.OperatorID, admin, api.OperatorPatch{Disabled: &yes}, 409, "CONFLICT")
	c.wantError("DELETE", "/api/v1/operators/{id}", "/api/v1/operators/"+me.OperatorID, admin, nil, 409, "CONFLICT")

	// API keys.
	var opsOp api.Operator
	c.call("POST", "/api/v1/operators", "/api/v1/operators", admin, api.OperatorCreate{Name: "ops-team", Role: "operator"}, 201, &opsOp)
	var created api.APIKeyCreated
	c.call("POST", "/api/v1/api-keys", "/api/v1/api-keys", admin,
		api.APIKeyCreate{Name: "ci", Role: "operator", OperatorID: opsOp.ID, ExpiresIn: "30d"}, 201, &created)
	if !strings.HasPrefix(created.Key, "tgk_"+created.ID+"_") || created.OperatorID != opsOp.ID || created.Role != "operator" ||
		created.ExpiresAt == nil || !created.ExpiresAt.Equal(c.clk.Now().Add(30*24*time.Hour)) || !strings.HasPrefix(created.Key, created.Prefix) {
		t.Errorf("created key = %+v", created)
	}
	// A key cannot exceed its operator's role (store rule, 400).
	c.wantError("POST", "/api/v1/api-keys", "/api/v1/api-keys", admin, api.APIKeyCreate{Name: "x", Role: "admin", OperatorID: opsOp.ID}, 400, "BAD_REQUEST")
	c.wantError("POST", "/api/v1/api-keys", "/api/v1/api-keys", admin, api.APIKeyCreate{Name: "x", Role: "operator", ExpiresIn: "forever"}, 400, "BAD_REQUEST")
	c.call("GET", "/api/v1/whoami", "/api/v1/whoami", created.Key, nil, 200, &me)
	if me.Role != "operator" || me.KeyID != created.ID {
		t.Errorf("whoami with the new key = %+v", me)
	}
	var keys []api.APIKey
	raw := c.call("GET", "/api/v1/api-keys", "/api/v1/api-keys", admin, nil, 200, &keys)
	if len(keys) != 2 || strings.Contains(string(raw), created.Key) || strings.Contains(string(raw), `"key"`) {
		t.Errorf("keys = %s", raw)
	}
	c.call("DELETE", "/api/v1/api-keys/{id}", "/api/v1/api-keys/"+created.ID, admin, nil, 204, nil)
	c.wantError("GET", "/api/v1/whoami", "/api/v1/whoami", created.Key, nil, 401, "UNAUTHENTICATED")
	c.wantError("DELETE", "/api/v1/api-keys/{id}", "/api/v1/api-keys/key-aaaaaaaaaaaaaaaaaaaa", admin, nil, 404, "NOT_FOUND")

	// Fleets.
	var edge, lab api.Fleet
	c.call("POST", "/api/v1/fleets", "/api/v1/fleets", admin, api.FleetCreate{Name: "edge"}, 201, &edge)
	defAtt := api.FleetAttestation{PCRs: []int{0, 1, 2, 3, 4, 5, 6, 7}, AllowedKinds: []string{"hardware"}}
	if !reflect.DeepEqual(edge.Policy, api.FleetPolicy{CertTTL: "24h", Attestation: defAtt}) || !store.ValidID(store.PrefixFleet, edge.ID) {
		t.Errorf("edge = %+v", edge)
	}
	ttl90 := "90d"
	c.call("POST", "/api/v1/fleets", "/api/v1/fleets", admin, api.FleetCreate{Name: "lab", Policy: &api.FleetPolicyPatch{AllowNoTPM: &yes, CertTTL: &ttl90}}, 201, &lab)
	if !reflect.DeepEqual(lab.Policy, api.FleetPolicy{AllowNoTPM: true, CertTTL: "2160h", Attestation: defAtt}) {
		t.Errorf("lab = %+v", lab)
	}
	c.wantError("POST", "/api/v1/fleets", "/api/v1/fleets", admin, api.FleetCreate{Name: "edge"}, 409, "CONFLICT")
	for _, bad := range []string{"30m", "91d", "1y"} {
		c.wantError("POST", "/api/v1/fleets", "/api/v1/fleets", admin, api.FleetCreate{Name: "x", Policy: &api.FleetPolicyPatch{CertTTL: &bad}}, 400, "BAD_REQUEST")
	}
	c.wantError("POST", "/api/v1/fleets", "/api/v1/fleets", admin, api.FleetCreate{Name: "flt-aaaaaaaaaaaaaaaaaaaa"}, 400, "BAD_REQUEST")
	c.wantError("POST", "/api/v1/fleets", "/api/v1/fleets", admin, api.FleetCreate{Name: "a/b"}, 400, "BAD_REQUEST")
	var fleets []api.Fleet
	c.call("GET", "/api/v1/fleets", "/api/v1/fleets", admin, nil, 200, &fleets)
	if len(fleets) != 2 || fleets[0].Name != "edge" || fleets[1].Name != "lab" {
		t.Errorf("fleets = %+v", fleets)
	}
	var f api.Fleet
	c.call("GET", "/api/v1/fleets/{fleet}", "/api/v1/fleets/"+edge.ID, admin, nil, 200, &f)
	if f.ID != edge.ID {
		t.Errorf("by id: %+v", f)
	}
	c.call("GET", "/api/v1/fleets/{fleet}", "/api/v1/fleets/lab", admin, nil, 200, &f)
	if f.ID != lab.ID {
		t.Errorf("by name: %+v", f)
	}
	c.wantError("GET", "/api/v1/fleets/{fleet}", "/api/v1/fleets/nope", admin, nil, 404, "NOT_FOUND")
	ttl48 := "48h"
	c.call("PATCH", "/api/v1/fleets/{fleet}", "/api/v1/fleets/lab", admin, api.FleetPatch{Policy: &api.FleetPolicyPatch{CertTTL: &ttl48}}, 200, &f)
	if !reflect.DeepEqual(f.Policy, api.FleetPolicy{AllowNoTPM: true, CertTTL: "48h", Attestation: defAtt}) {
		t.Errorf("patched policy = %+v (absent fields must keep their value)", f.Policy)
	}

	// The attestation policy: set, shown, partially patched, reset.
	interval, pcrs, yes2 := "10s", []int{7, 0, 7}, true
	golden := strings.Repeat("ab", 32)
	rules := map[int]api.PCRRule{7: {Mode: "golden", Allow: []string{golden}}}
	c.call("PATCH", "/api/v1/fleets/{fleet}", "/api/v1/fleets/lab", admin, api.FleetPatch{Policy: &api.FleetPolicyPatch{
		AllowSimulatedTPM: &yes2,
		Attestation:       &api.FleetAttestationPatch{Interval: &interval, PCRs: &pcrs, Rules: &rules, RevokeOnUntrusted: &yes2},
	}}, 200, &f)
	wantAtt := api.FleetAttestation{Interval: "10s", PCRs: []int{0, 7}, Rules: rules, AllowedKinds: []string{"hardware", "swtpm", "simulated"}, RevokeOnUntrusted: true}
	if !reflect.DeepEqual(f.Policy.Attestation, wantAtt) {
		t.Errorf("attestation policy = %+v, want %+v", f.Policy.Attestation, wantAtt)
	}
	hw := []string{"hardware"}
	c.call("PATCH", "/api/v1/fleets/{fleet}", "/api/v1/fleets/lab", admin, api.FleetPatch{Policy: &api.FleetPolicyPatch{
		Attestation: &api.FleetAttestationPatch{AllowedKinds: &hw},
	}}, 200, &f)
	wantAtt.AllowedKinds = hw
	if !reflect.DeepEqual(f.Policy.Attestation, wantAtt) {
		t.Errorf("after allowed_kinds only: %+v, want %+v", f.Policy.Attestation, wantAtt)
	}
	for name, bad := range map[string]api.FleetAttestationPatch{
		"interval below 1s":       {Interval: ptrTo("500ms")},
		"interval not a duration": {Interval: ptrTo("often")},
		"PCR out of range":        {PCRs: &[]int{0, 24}},
		"rule for an unselected":  {Rules: &map[int]api.PCRRule{3: {Mode: "baseline"}}},
		"golden without allow":    {Rules: &map[int]api.PCRRule{7: {Mode: "golden"}}},
		"golden not a digest":     {Rules: &map[int]api.PCRRule{7: {Mode: "golden", Allow: []string{"abcd"}}}},
		"unknown mode":            {Rules: &map[int]api.PCRRule{7: {Mode: "any"}}},
		"unknown kind":            {AllowedKinds: &[]string{"emulated"}},
		"selection drops a rule":  {PCRs: &[]int{0}},
	} {
		raw := c.call("PATCH", "/api/v1/fleets/{fleet}", "/api/v1/fleets/lab", admin, api.FleetPatch{Policy: &api.FleetPolicyPatch{Attestation: &bad}}, 400, nil)
		if errCode(raw) != "BAD_REQUEST" || !strings.Contains(string(raw), "attestation") {
			t.Errorf("%s: error %s does not name the attestation policy", name, raw)
		}
	}
	empty, none := "", []int{}
	f = api.Fleet{} // Unmarshal merges into maps
	c.call("PATCH", "/api/v1/fleets/{fleet}", "/api/v1/fleets/lab", admin, api.FleetPatch{Policy: &api.FleetPolicyPatch{
		Attestation: &api.FleetAttestationPatch{Interval: &empty, PCRs: &none, Rules: &map[int]api.PCRRule{}, AllowedKinds: &[]string{}},
	}}, 200, &f)
	wantAtt = api.FleetAttestation{PCRs: defAtt.PCRs, AllowedKinds: []string{"hardware", "swtpm", "simulated"}, RevokeOnUntrusted: true}
	if !reflect.DeepEqual(f.Policy.Attestation, wantAtt) {
		t.Errorf("after reset: %+v, want %+v", f.Policy.Attestation, wantAtt)
	}
	c.wantError("PATCH", "/api/v1/fleets/{fleet}", "/api/v1/fleets/lab", admin, map[string]any{}, 400, "BAD_REQUEST")

	// Enrollment tokens.
	var tok1, tok2 api.EnrollmentTokenCreated
	c.call("POST", "/api/v1/fleets/{fleet}/enrollment-tokens", "/api/v1/fleets/edge/enrollment-tokens", admin, nil, 201, &tok1)
	if tok1.FleetID != edge.ID || tok1.CAHash != env.CA.CAHash() || !tok1.ExpiresAt.Equal(c.clk.Now().Add(time.Hour)) {
		t.Errorf("token = %+v", tok1)
	}
	lt, err := env.Store.LookupEnrollmentToken(ctx, tok1.Token)
	if err != nil || lt.ID != tok1.ID || lt.FleetID != edge.ID || lt.Tenant != "acme" {
		t.Errorf("LookupEnrollmentToken(created token) = %+v, %v", lt, err)
	}
	c.call("POST", "/api/v1/fleets/{fleet}/enrollment-tokens", "/api/v1/fleets/"+edge.ID+"/enrollment-tokens", admin, api.EnrollmentTokenCreate{TTL: "7d"}, 201, &tok2)
	if !tok2.ExpiresAt.Equal(c.clk.Now().Add(7 * 24 * time.Hour)) {
		t.Errorf("7d token expires %v", tok2.ExpiresAt)
	}
	c.wantError("POST", "/api/v1/fleets/{fleet}/enrollment-tokens", "/api/v1/fleets/edge/enrollment-tokens", admin, api.EnrollmentTokenCreate{TTL: "169h"}, 400, "BAD_REQUEST")
	c.wantError("POST", "/api/v1/fleets/{fleet}/enrollment-tokens", "/api/v1/fleets/nope/enrollment-tokens", admin, nil, 404, "NOT_FOUND")
	var toks []api.EnrollmentToken
	raw = c.call("GET", "/api/v1/fleets/{fleet}/enrollment-tokens", "/api/v1/fleets/edge/enrollment-tokens", admin, nil, 200, &toks)
	if len(toks) != 2 || toks[0].State != "active" || strings.Contains(string(raw), "tgt_") {
		t.Errorf("tokens = %s", raw)
	}
	c.call("DELETE", "/api/v1/enrollment-tokens/{id}", "/api/v1/enrollment-tokens/"+tok2.ID, admin, nil, 204, nil)
	c.call("GET", "/api/v1/fleets/{fleet}/enrollment-tokens", "/api/v1/fleets/edge/enrollment-tokens", admin, nil, 200, &toks)
	if len(toks) != 1 || toks[0].ID != tok1.ID {
		t.Errorf("tokens after delete = %+v", toks)
	}
	c.clk.Advance(2 * time.Hour)
	c.call("GET", "/api/v1/fleets/{fleet}/enrollment-tokens", "/api/v1/fleets/edge/enrollment-tokens", admin, nil, 200, &toks)
	if toks[0].State != "expired" {
		t.Errorf("token state after its ttl = %q", toks[0].State)
	}

	// Devices.
	d1 := seedDevice(t, env.Store, "acme", edge.ID, "ek1", map[string]string{"site": "berlin"})
	d2 := seedDevice(t, env.Store, "acme", edge.ID, "ek2", map[string]string{"site": "paris"})
	d3 := seedDevice(t, env.Store, "acme", lab.ID, "ek3", nil)
	if err := env.Store.SetDevicePresence(ctx, "acme", d2.ID, true, c.clk.Now()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"", []string{d1.ID, d2.ID, d3.ID}},
		{"?fleet=edge", []string{d1.ID, d2.ID}},
		{"?fleet=" + lab.ID, []string{d3.ID}},
		{"?online=true", []string{d2.ID}},
		{"?online=false&fleet=edge", []string{d1.ID}},
		{"?label=site=berlin", []string{d1.ID}},
		{"?label=site=berlin&label=tier=gold", nil},
	} {
		var devs []api.Device
		c.call("GET", "/api/v1/devices", "/api/v1/devices"+tc.query, admin, nil, 200, &devs)
		var ids []string
		for _, d := range devs {
			ids = append(ids, d.ID)
		}
		// Same creation time: the order among them is by id.
		sort.Strings(ids)
		sort.Strings(tc.want)
		if strings.Join(ids, ",") != strings.Join(tc.want, ",") {
			t.Errorf("devices%s = %v, want %v", tc.query, ids, tc.want)
		}
	}
	for _, q := range []string{"?online=maybe", "?label=site", "?label=bad%20key=x", "?fleat=edge"} {
		c.wantError("GET", "/api/v1/devices", "/api/v1/devices"+q, admin, nil, 400, "BAD_REQUEST")
	}
	c.wantError("GET", "/api/v1/devices", "/api/v1/devices?fleet=nope", admin, nil, 404, "NOT_FOUND")
	var dev api.Device
	c.call("GET", "/api/v1/devices/{id}", "/api/v1/devices/"+d2.ID, admin, nil, 200, &dev)
	if !dev.Online || dev.LastSeenAt == nil || dev.Labels["site"] != "paris" || dev.TPMKind != "hardware" || dev.Status != "enrolled" {
		t.Errorf("device = %+v", dev)
	}
	name := "cam-1"
	c.call("PATCH", "/api/v1/devices/{id}", "/api/v1/devices/"+d1.ID, admin,
		api.DevicePatch{Name: &name, Labels: map[string]string{"site": "munich", "example.com/tier": "gold"}}, 200, &dev)
	if dev.Name != "cam-1" || len(dev.Labels) != 2 || dev.Labels["site"] != "munich" {
		t.Errorf("patched device = %+v", dev)
	}
	c.wantError("PATCH", "/api/v1/devices/{id}", "/api/v1/devices/"+d1.ID, admin, api.DevicePatch{Labels: map[string]string{"-bad": "x"}}, 400, "BAD_REQUEST")
	c.wantError("PATCH", "/api/v1/devices/{id}", "/api/v1/devices/"+d1.ID, admin, api.DevicePatch{Labels: map[string]string{"ok": "bad value"}}, 400, "BAD_REQUEST")
	var sent api.AttestChallengeSent
	c.call("POST", "/api/v1/devices/{id}/attest", "/api/v1/devices/"+d2.ID+"/attest", admin, nil, 202, &sent)
	if sent.ChallengeID == "" || sent.Device != d2.ID || len(sent.PCRs) == 0 {
		t.Errorf("attest = %+v", sent)
	}
	if calls := env.Attester.Calls(); len(calls) != 1 || calls[0] != "acme/"+d2.ID {
		t.Errorf("attester calls = %v", calls)
	}
	c.wantError("POST", "/api/v1/devices/{id}/attest", "/api/v1/devices/dev-aaaaaaaaaaaaaaaaaaaa/attest", admin, nil, 404, "NOT_FOUND")

	// Attestation history, newest first, and the quarantine on the device.
	var hist []api.AttestationRecord
	c.call("GET", "/api/v1/devices/{id}/attestations", "/api/v1/devices/"+d2.ID+"/attestations", admin, nil, 200, &hist)
	if hist == nil || len(hist) != 0 {
		t.Errorf("history before any verdict = %#v, want []", hist)
	}
	t0 := c.clk.Now()
	for i, st := range []store.VerdictState{store.VerdictUnknown, store.VerdictTrusted, store.VerdictUntrusted} {
		rec := store.AttestationRecord{DeviceID: d2.ID, State: st, VerdictAt: t0.Add(time.Duration(i) * time.Second)}
		if st != store.VerdictUnknown {
			rec.PCRDigest, rec.EvidenceAt = "ab12", t0.Add(time.Duration(i)*time.Second-time.Millisecond)
		}
		if st == store.VerdictUntrusted {
			rec.Reasons = []byte(`[{"code":"PCR_POLICY","detail":"PCR 7 changed","pcr":7}]`)
			rec.Reboot = true
		}
		if _, err := env.Store.AppendAttestationHistory(ctx, "acme", rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := env.Store.SetQuarantined(ctx, "acme", d2.ID, true); err != nil {
		t.Fatal(err)
	}
	c.call("GET", "/api/v1/devices/{id}", "/api/v1/devices/"+d2.ID, admin, nil, 200, &dev)
	if !dev.Quarantined {
		t.Errorf("quarantined device = %+v", dev)
	}
	c.call("GET", "/api/v1/devices/{id}/attestations", "/api/v1/devices/"+d2.ID+"/attestations", admin, nil, 200, &hist)
	if len(hist) != 3 || hist[0].State != "untrusted" || hist[1].State != "trusted" || hist[2].State != "unknown" {
		t.Fatalf("history = %+v", hist)
	}
	if h := hist[0]; len(h.Reasons) != 1 || h.Reasons[0].Code != "PCR_POLICY" || h.Reasons[0].PCR == nil || *h.Reasons[0].PCR != 7 ||
		!h.Reboot || h.PCRDigest != "ab12" || h.EvidenceAt == nil || !h.VerdictAt.Equal(t0.Add(2*time.Second)) {
		t.Errorf("newest history entry = %+v", h)
	}
	if h := hist[2]; h.EvidenceAt != nil || h.Reasons == nil || len(h.Reasons) != 0 {
		t.Errorf("oldest history entry = %+v", h)
	}
	c.call("GET", "/api/v1/devices/{id}/attestations", "/api/v1/devices/"+d2.ID+"/attestations?limit=1&before="+
		hist[0].VerdictAt.Format(time.RFC3339Nano), admin, nil, 200, &hist)
	if len(hist) != 1 || hist[0].State != "trusted" {
		t.Errorf("history page 2 = %+v", hist)
	}
	for _, q := range []string{"?limit=0", "?limit=1001", "?limit=x", "?before=yesterday", "?after=1"} {
		c.wantError("GET", "/api/v1/devices/{id}/attestations", "/api/v1/devices/"+d2.ID+"/attestations"+q, admin, nil, 400, "BAD_REQUEST")
	}
	c.wantError("GET", "/api/v1/devices/{id}/attestations", "/api/v1/devices/dev-aaaaaaaaaaaaaaaaaaaa/attestations", admin, nil, 404, "NOT_FOUND")
	c.call("POST", "/api/v1/devices/{id}/revoke", "/api/v1/devices/"+d2.ID+"/revoke", admin, nil, 200, &dev)
	c.wantError("POST", "/api/v1/devices/{id}/attest", "/api/v1/devices/"+d2.ID+"/attest", admin, nil, 409, "CONFLICT")
	if dev.Status != "revoked" || dev.Online {
		t.Errorf("revoked device = %+v", dev)
	}
	if calls := env.Revoker.Calls(); len(calls) != 1 || calls[0] != "acme/"+d2.ID {
		t.Errorf("revoker calls after revoke = %v", calls)
	}
	c.wantError("POST", "/api/v1/devices/{id}/revoke", "/api/v1/devices/dev-aaaaaaaaaaaaaaaaaaaa/revoke", admin, nil, 404, "NOT_FOUND")
	c.wantError("DELETE", "/api/v1/fleets/{fleet}", "/api/v1/fleets/lab", admin, nil, 409, "CONFLICT")
	c.call("DELETE", "/api/v1/devices/{id}", "/api/v1/devices/"+d3.ID, admin, nil, 204, nil)
	if calls := env.Revoker.Calls(); len(calls) != 2 || calls[1] != "acme/"+d3.ID {
		t.Errorf("revoker calls after delete = %v", calls)
	}
	c.wantError("GET", "/api/v1/devices/{id}", "/api/v1/devices/"+d3.ID, admin, nil, 404, "NOT_FOUND")
	c.call("DELETE", "/api/v1/fleets/{fleet}", "/api/v1/fleets/lab", admin, nil, 204, nil)
	c.wantError("GET", "/api/v1/fleets/{fleet}", "/api/v1/fleets/"+lab.ID, admin, nil, 404, "NOT_FOUND")

	// MQTT credentials.
	var creds api.MQTTCredentials
	c.call("POST", "/api/v1/mqtt/credentials", "/api/v1/mqtt/credentials", admin, api.MQTTCredentialsRequest{CSR: csrPEM(t, p256Key(t))}, 200, &creds)
	checkOperatorCert(t, c, creds)

	// Audit: every mutation above left one entry, chained.
	var page api.AuditPage
	c.call("GET", "/api/v1/audit", "/api/v1/audit", admin, nil, 200, &page)
	if _, err := audit.Verify(page.Entries, audit.VerifyOptions{Tenant: "acme"}); err != nil {
		t.Fatalf("audit chain does not verify: %v", err)
	}
	var actions []string
	for _, e := range page.Entries {
		actions = append(actions, e.Action)
		if !strings.HasPrefix(e.Actor, "key-") || e.RequestID == "" {
			t.Errorf("entry %d: actor %q request id %q", e.Seq, e.Actor, e.RequestID)
		}
	}
	wantActions := "operator.create operator.update operator.update operator.delete operator.create api_key.create api_key.revoke " +
		"fleet.create fleet.create fleet.update fleet.update fleet.update fleet.update enrollment_token.create enrollment_token.create enrollment_token.delete " +
		"device.update device.attest device.revoke device.delete fleet.delete mqtt_credentials.issue"
	if strings.Join(actions, " ") != wantActions {
		t.Errorf("audit actions:\n got %s\nwant %s", strings.Join(actions, " "), wantActions)
	}
	if page.NextAfter != uint64(len(page.Entries)) {
		t.Errorf("next_after = %d", page.NextAfter)
	}
	// Paging: the pages join into the same chain.
	var all []audit.Entry
	after := uint64(0)
	for i := 0; ; i++ {
		var p api.AuditPage
		c.call("GET", "/api/v1/audit", "/api/v1/audit?after="+strconv.FormatUint(after, 10)+"&limit=5", admin, nil, 200, &p)
		all = append(all, p.Entries...)
		if len(p.Entries) == 0 {
			break
		}
		after = p.NextAfter
		if i > 10 {
			t.Fatal("paging does not end")
		}
	}
	if len(all) != len(page.Entries) {
		t.Errorf("paged %d entries, want %d", len(all), len(page.Entries))
	}
	for _, q := range []string{"?after=-1", "?limit=0", "?limit=1001", "?after=x", "?befor=3"} {
		c.wantError("GET", "/api/v1/audit", "/api/v1/audit"+q, admin, nil, 400, "BAD_REQUEST")
	}

	runPackageCRUD(t, c)
	runRolloutCRUD(t, c)
	runPolicyCRUD(t, c)
}

func p256Key(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func csrPEM(t *testing.T, key any) string {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "operator"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// checkOperatorCert verifies issued MQTT credentials against the tenant CA.
func checkOperatorCert(t *testing.T, c *client, creds api.MQTTCredentials) {
	t.Helper()
	if creds.Tenant != "acme" || creds.BrokerURL != "mqtts://broker.test:8883" || creds.CAPEM != string(c.env.CA.PlatformCAPEM()) {
		t.Errorf("credentials = %+v", creds)
	}
	block, _ := pem.Decode([]byte(creds.CertificatePEM))
	if block == nil {
		t.Fatalf("certificate_pem is not PEM: %q", creds.CertificatePEM)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	root, err := c.env.CA.TenantRoot("acme")
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("operator certificate does not verify against the tenant CA: %v", err)
	}
	if len(cert.URIs) != 1 || !strings.HasPrefix(cert.URIs[0].String(), "spiffe://tensorguardflow/tenant/acme/operator/op-") {
		t.Errorf("operator certificate URIs = %v", cert.URIs)
	}
}

func ptrTo[T any](v T) *T { return &v }
