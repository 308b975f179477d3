package policybundle

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
)

// Algorithm is the JWS algorithm of every bundle signature: ECDSA P-256
// with SHA-256.
const Algorithm = "ES256"

// metadataKey is where the manifest's metadata keeps our fields.
const metadataKey = "tensorguard"

// SigningKey is a tenant's policy signing key.
type SigningKey struct {
	ID  string
	Key *ecdsa.PrivateKey
}

// VerificationKey is the public half a device pins: its id, the algorithm
// (always Algorithm) and the public key as PEM (PKIX "PUBLIC KEY").
type VerificationKey struct {
	ID           string `json:"key_id"`
	Algorithm    string `json:"algorithm"`
	PublicKeyPEM string `json:"public_key_pem"`
}

// NewSigningKey generates a P-256 signing key.
func NewSigningKey() (SigningKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return SigningKey{}, err
	}
	return SigningKey{ID: KeyID(&k.PublicKey), Key: k}, nil
}

// ParseSigningKey reads a PKCS #8 DER P-256 key (as the control plane
// stores it, sealed).
func ParseSigningKey(pkcs8 []byte) (SigningKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(pkcs8)
	if err != nil {
		return SigningKey{}, fmt.Errorf("policy signing key: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return SigningKey{}, fmt.Errorf("policy signing key is %T, want ECDSA P-256", k)
	}
	return SigningKey{ID: KeyID(&ek.PublicKey), Key: ek}, nil
}

// MarshalPKCS8 returns the private key as PKCS #8 DER.
func (k SigningKey) MarshalPKCS8() ([]byte, error) { return x509.MarshalPKCS8PrivateKey(k.Key) }

// Public returns the key a device verifies with.
func (k SigningKey) Public() VerificationKey {
	der, err := x509.MarshalPKIXPublicKey(&k.Key.PublicKey)
	if err != nil {
		panic(err) // a P-256 key always marshals
	}
	return VerificationKey{ID: k.ID, Algorithm: Algorithm,
		PublicKeyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))}
}

// KeyID is "tgpol-" and the first 16 bytes of SHA-256 of the key's PKIX
// DER, in hex: it names the key in the JWS header and in the device's pin.
func KeyID(pub *ecdsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		panic(err)
	}
	h := sha256.Sum256(der)
	return "tgpol-" + hex.EncodeToString(h[:16])
}

// Check parses the key and checks that its id matches it and that the
// algorithm is Algorithm.
func (v VerificationKey) Check() error {
	if v.Algorithm != Algorithm {
		return fmt.Errorf("policy key %s: algorithm %q, want %s", v.ID, v.Algorithm, Algorithm)
	}
	pub, err := v.publicKey()
	if err != nil {
		return err
	}
	if id := KeyID(pub); id != v.ID {
		return fmt.Errorf("policy key: id %q does not match the key (%s)", v.ID, id)
	}
	return nil
}

func (v VerificationKey) publicKey() (*ecdsa.PublicKey, error) {
	blk, rest := pem.Decode([]byte(v.PublicKeyPEM))
	if blk == nil || blk.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("policy key: want exactly one PEM PUBLIC KEY block")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("policy key: %w", err)
	}
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("policy key is %T, want ECDSA P-256", k)
	}
	return ek, nil
}

// Meta is what the control plane binds into a bundle's signed manifest.
type Meta struct {
	Tenant    string
	Fleet     string
	Revision  int64
	CreatedAt time.Time
}

// Sign returns u as a signed bundle (gzipped tar) with m in its manifest,
// signed with key.
func Sign(u *Unsigned, m Meta, key SigningKey) ([]byte, error) {
	if m.Revision <= 0 {
		return nil, fmt.Errorf("sign policy bundle: revision %d: must be positive", m.Revision)
	}
	if m.Tenant == "" || m.Fleet == "" {
		return nil, errors.New("sign policy bundle: tenant and fleet are required")
	}
	if key.Key == nil || key.ID == "" {
		return nil, errors.New("sign policy bundle: no key")
	}
	b := u.b.Copy()
	roots := u.Roots()
	b.Manifest = bundle.Manifest{
		Revision: strconv.FormatInt(m.Revision, 10),
		Roots:    &roots,
		Metadata: map[string]any{metadataKey: map[string]any{
			"tenant": m.Tenant, "fleet": m.Fleet, "created_at": m.CreatedAt.UTC().Format(time.RFC3339),
		}},
	}
	b.Manifest.SetRegoVersion(ast.RegoV1)
	der, err := key.MarshalPKCS8()
	if err != nil {
		return nil, err
	}
	pemKey := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	clear(der)
	if err := b.GenerateSignature(bundle.NewSigningConfig(pemKey, Algorithm, ""), key.ID, false); err != nil {
		return nil, fmt.Errorf("sign policy bundle: %w", err)
	}
	var out bytes.Buffer
	if err := bundle.NewWriter(&out).DisableFormat(true).Write(b); err != nil {
		return nil, fmt.Errorf("write policy bundle: %w", err)
	}
	if out.Len() > MaxBundleSize {
		return nil, problems(Problem{Message: fmt.Sprintf("signed bundle is %d bytes: at most %d", out.Len(), MaxBundleSize)})
	}
	return out.Bytes(), nil
}
