package mqttacl

import (
	"crypto/x509"
	"errors"
	"net/url"
	"testing"
)

func TestParseSPIFFEID(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want Identity
		ok   bool
	}{
		{"spiffe://tensorguardflow/tenant/acme/device/dev-abcdefghij234567abcd", Device("acme", "dev-abcdefghij234567abcd"), true},
		{"spiffe://tensorguardflow/tenant/acme/operator/op-x", Operator("acme", "op-x"), true},
		{"spiffe://tensorguardflow/controlplane", ControlPlane(""), true},
		{"spiffe://tensorguardflow/controlplane/cp-1", ControlPlane("cp-1"), true},
		{"spiffe://other/tenant/acme/device/dev-x", Identity{}, false},
		{"https://tensorguardflow/tenant/acme/device/dev-x", Identity{}, false},
		{"spiffe://tensorguardflow:443/tenant/acme/device/dev-x", Identity{}, false},
		{"spiffe://user@tensorguardflow/tenant/acme/device/dev-x", Identity{}, false},
		{"spiffe://tensorguardflow/tenant/acme/device/dev-x?x=1", Identity{}, false},
		{"spiffe://tensorguardflow/tenant/acme/device/dev-x#f", Identity{}, false},
		{"spiffe://tensorguardflow/tenant/acme/device/dev-x/", Identity{}, false},
		{"spiffe://tensorguardflow/tenant/acme/device/dev%2Dx", Identity{}, false},
		{"spiffe://tensorguardflow/tenant/acme/device/dev+x", Identity{}, false},
		{"spiffe://tensorguardflow/tenant/acme/device/dev#", Identity{}, false},
		{"spiffe://tensorguardflow/tenant/acme/device/", Identity{}, false},
		{"spiffe://tensorguardflow/tenant/ACME/device/dev-x", Identity{}, false},
		{"spiffe://tensorguardflow/tenant/-acme/device/dev-x", Identity{}, false},
		{"spiffe://tensorguardflow/tenant/acme/device/dev-x/extra", Identity{}, false},
		{"spiffe://tensorguardflow/tenant/acme/admin/x", Identity{}, false},
		{"spiffe://tensorguardflow/tenant/acme", Identity{}, false},
		{"spiffe://tensorguardflow//tenant/acme/device/dev-x", Identity{}, false},
		{"spiffe://tensorguardflow/tenant/./device/dev-x", Identity{}, false},
		{"spiffe://TensorGuardFlow/tenant/acme/device/dev-x", Identity{}, false},
		{"spiffe://tensorguardflow/controlplane/", Identity{}, false},
		{"spiffe://tensorguardflow/controlplane/a/b", Identity{}, false},
		{"", Identity{}, false},
		{"::", Identity{}, false},
	}
	for _, tc := range tests {
		got, err := ParseSPIFFEID(tc.in)
		if tc.ok != (err == nil) || got != tc.want {
			t.Errorf("ParseSPIFFEID(%q) = %+v, %v; want %+v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidIdentity) {
			t.Errorf("ParseSPIFFEID(%q) error %v is not ErrInvalidIdentity", tc.in, err)
		}
		if err == nil && got.SPIFFEID() != tc.in {
			t.Errorf("round trip of %q gave %q", tc.in, got.SPIFFEID())
		}
	}
}

func FuzzParseSPIFFEID(f *testing.F) {
	f.Add("spiffe://tensorguardflow/tenant/acme/device/dev-x")
	f.Add("spiffe://tensorguardflow/tenant/acme/operator/op-x")
	f.Add("spiffe://tensorguardflow/controlplane/cp-1")
	f.Add("spiffe://tensorguardflow/tenant/acme/device/dev%2Fx")
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseSPIFFEID(s)
		if err != nil {
			return
		}
		if id.Validate() != nil || id.SPIFFEID() != s {
			t.Fatalf("accepted %q as %+v which does not round-trip", s, id)
		}
		again, err := ParseSPIFFEID(id.SPIFFEID())
		if err != nil || again != id {
			t.Fatalf("re-parse of %q: %+v, %v", s, again, err)
		}
	})
}

func TestIdentityFromCert(t *testing.T) {
	t.Parallel()
	u := func(s string) *url.URL {
		t.Helper()
		p, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	dev := "spiffe://tensorguardflow/tenant/acme/device/dev-x"
	tests := []struct {
		name    string
		cert    *x509.Certificate
		want    Identity
		wantErr error
	}{
		{"device", &x509.Certificate{URIs: []*url.URL{u(dev)}}, Device("acme", "dev-x"), nil},
		{"nil", nil, Identity{}, ErrNoIdentity},
		{"no URI SAN", &x509.Certificate{DNSNames: []string{"dev-x"}}, Identity{}, ErrNoIdentity},
		{"two URI SANs", &x509.Certificate{URIs: []*url.URL{u(dev), u("spiffe://tensorguardflow/tenant/other/device/dev-x")}}, Identity{}, ErrInvalidIdentity},
		{"foreign", &x509.Certificate{URIs: []*url.URL{u("spiffe://example.org/x")}}, Identity{}, ErrInvalidIdentity},
	}
	for _, tc := range tests {
		got, err := IdentityFromCert(tc.cert)
		if got != tc.want || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
			t.Errorf("%s: got %+v, %v; want %+v, %v", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestIdentityValidateAndString(t *testing.T) {
	t.Parallel()
	bad := []Identity{
		{},
		{Kind: "admin", Tenant: "acme"},
		{Kind: KindDevice, Tenant: "acme"},
		{Kind: KindDevice, Tenant: "acme", Device: "dev-x", Operator: "op-y"},
		{Kind: KindOperator, Tenant: "acme", Operator: "op/y"},
		{Kind: KindControlPlane, Tenant: "acme"},
		Device("acme", "dev+x"),
		Device("acme", "#"),
	}
	for _, id := range bad {
		if id.Validate() == nil || id.SPIFFEID() != "" {
			t.Errorf("%+v validated", id)
		}
		if id.String() == "" {
			t.Errorf("%+v: empty String", id)
		}
		if len(RulesFor(id).Publish)+len(RulesFor(id).Subscribe) != 0 {
			t.Errorf("%+v: invalid identity has rules", id)
		}
	}
	if got := Device("acme", "dev-x").String(); got != "spiffe://tensorguardflow/tenant/acme/device/dev-x" {
		t.Errorf("String = %q", got)
	}
}
