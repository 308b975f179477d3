package mqttacl

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// TrustDomain is the SPIFFE trust domain of every TensorGuardFlow identity.
const TrustDomain = "tensorguardflow"

// Kind says what an identity is allowed to be.
type Kind string

// The identity kinds.
const (
	KindDevice       Kind = "device"
	KindOperator     Kind = "operator"
	KindControlPlane Kind = "controlplane"
)

// Sentinel errors returned (wrapped) by the identity parsers.
var (
	// ErrNoIdentity means a certificate carries no URI SAN at all.
	ErrNoIdentity = errors.New("no SPIFFE identity")
	// ErrInvalidIdentity means a URI SAN (or an Identity value) is not one
	// of the forms this package accepts.
	ErrInvalidIdentity = errors.New("invalid SPIFFE identity")
)

// Identity is who an MQTT client is. Exactly the fields of its Kind are set:
// Tenant and Device for a device, Tenant and Operator for an operator, and
// optionally Instance for the control plane.
type Identity struct {
	Kind     Kind
	Tenant   string
	Device   string
	Operator string
	// Instance names a control-plane replica; it may be empty.
	Instance string
}

// tenantRE is the tenant slug of docs/identity.md.
var tenantRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// idRE accepts the prefixed base32 ids of docs/identity.md ("dev-…",
// "op-…") and, deliberately, any other lower-case slug of the same alphabet:
// what matters for the ACL is that an id can never contain '/', '+', '#',
// '$' or anything else that changes how a topic is split or matched.
var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// ValidTenant reports whether s is a well-formed tenant id.
func ValidTenant(s string) bool { return tenantRE.MatchString(s) }

// ValidID reports whether s is a well-formed device, operator, fleet,
// rollout, job or command id: safe as one MQTT topic level.
func ValidID(s string) bool { return idRE.MatchString(s) }

// Device returns the identity of a device.
func Device(tenant, device string) Identity {
	return Identity{Kind: KindDevice, Tenant: tenant, Device: device}
}

// Operator returns the identity of an operator credential.
func Operator(tenant, operator string) Identity {
	return Identity{Kind: KindOperator, Tenant: tenant, Operator: operator}
}

// ControlPlane returns the identity of the control plane (instance may be
// empty).
func ControlPlane(instance string) Identity {
	return Identity{Kind: KindControlPlane, Instance: instance}
}

// Validate reports whether id is complete and well-formed for its kind.
func (id Identity) Validate() error {
	switch id.Kind {
	case KindDevice:
		if !ValidTenant(id.Tenant) || !ValidID(id.Device) || id.Operator != "" || id.Instance != "" {
			return fmt.Errorf("%w: device %q in tenant %q", ErrInvalidIdentity, id.Device, id.Tenant)
		}
	case KindOperator:
		if !ValidTenant(id.Tenant) || !ValidID(id.Operator) || id.Device != "" || id.Instance != "" {
			return fmt.Errorf("%w: operator %q in tenant %q", ErrInvalidIdentity, id.Operator, id.Tenant)
		}
	case KindControlPlane:
		if id.Tenant != "" || id.Device != "" || id.Operator != "" || (id.Instance != "" && !ValidID(id.Instance)) {
			return fmt.Errorf("%w: control plane %q", ErrInvalidIdentity, id.Instance)
		}
	default:
		return fmt.Errorf("%w: kind %q", ErrInvalidIdentity, id.Kind)
	}
	return nil
}

// SPIFFEID returns the URI to put in a certificate's SAN for id. It returns
// "" for an invalid identity.
func (id Identity) SPIFFEID() string {
	if id.Validate() != nil {
		return ""
	}
	switch id.Kind {
	case KindDevice:
		return "spiffe://" + TrustDomain + "/tenant/" + id.Tenant + "/device/" + id.Device
	case KindOperator:
		return "spiffe://" + TrustDomain + "/tenant/" + id.Tenant + "/operator/" + id.Operator
	default:
		if id.Instance == "" {
			return "spiffe://" + TrustDomain + "/controlplane"
		}
		return "spiffe://" + TrustDomain + "/controlplane/" + id.Instance
	}
}

// String returns the SPIFFE ID, or a description of an invalid identity.
func (id Identity) String() string {
	if s := id.SPIFFEID(); s != "" {
		return s
	}
	return fmt.Sprintf("invalid identity %+v", struct {
		Kind                               Kind
		Tenant, Device, Operator, Instance string
	}(id))
}

// ParseSPIFFEID parses one of the three SPIFFE ID forms in the package doc.
// It accepts only the canonical spelling: no percent-encoding, port, user
// info, query, fragment, empty or dot segments, or trailing slash.
func ParseSPIFFEID(s string) (Identity, error) {
	bad := func(why string) (Identity, error) {
		return Identity{}, fmt.Errorf("%w: %q: %s", ErrInvalidIdentity, s, why)
	}
	u, err := url.Parse(s)
	if err != nil {
		return bad("not a URI")
	}
	if u.Scheme != "spiffe" || u.Host != TrustDomain {
		return bad("not in trust domain " + TrustDomain)
	}
	segs := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	var id Identity
	switch {
	case len(segs) == 4 && segs[0] == "tenant" && segs[2] == "device":
		id = Device(segs[1], segs[3])
	case len(segs) == 4 && segs[0] == "tenant" && segs[2] == "operator":
		id = Operator(segs[1], segs[3])
	case len(segs) == 1 && segs[0] == "controlplane":
		id = ControlPlane("")
	case len(segs) == 2 && segs[0] == "controlplane":
		id = ControlPlane(segs[1])
	default:
		return bad("unknown path")
	}
	if err := id.Validate(); err != nil {
		return bad("malformed id")
	}
	// Round-trip: anything url.Parse tolerated but we would not have
	// written ourselves (ports, escapes, queries, …) is refused.
	if id.SPIFFEID() != s {
		return bad("not canonical")
	}
	return id, nil
}

// IdentityFromCert returns the identity in cert's SPIFFE URI SAN. As in the
// X509-SVID specification, the certificate must carry exactly one URI SAN.
// It does not verify the certificate: call it on a verified chain's leaf.
func IdentityFromCert(cert *x509.Certificate) (Identity, error) {
	if cert == nil || len(cert.URIs) == 0 {
		return Identity{}, ErrNoIdentity
	}
	if len(cert.URIs) != 1 {
		return Identity{}, fmt.Errorf("%w: %d URI SANs, want exactly one", ErrInvalidIdentity, len(cert.URIs))
	}
	return ParseSPIFFEID(cert.URIs[0].String())
}
