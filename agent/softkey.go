package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/tensorguard/tensorguardflow/agent/internal/state"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
)

// The TLS key of a device without a TPM (tpm.none) lives in the state file
// (mode 0600, like the rest of the identity), as PKCS #8 DER under
// identity/kvSoftwareKey. It is created once, before the first enrollment,
// and reused for every renewal and after every restart, so the device keeps
// its identity. Nothing logs it.
const (
	kvSoftwareKey  = "software_tls_key"
	softwareKeyRef = "software:state:identity/" + kvSoftwareKey
)

// loadSoftwareKey returns the software TLS key from db, creating and
// storing a new ECDSA P-256 key when the device has neither a key nor an
// identity yet. A stored identity without a key was enrolled with a TPM:
// that is ErrKeyMismatch, never a silent new key.
func loadSoftwareKey(db *state.DB) (*ecdsa.PrivateKey, error) {
	der, err := db.Get(kvNamespace, kvSoftwareKey)
	switch {
	case err == nil:
		return parseSoftwareKey(der)
	case !errors.Is(err, state.ErrNotFound):
		return nil, fmt.Errorf("read software tls key: %w", err)
	}
	if stored, err := db.Identity(); err == nil {
		return nil, fmt.Errorf("%w (device %s, state %s%s): tpm.none is set but the device enrolled with a TPM; "+
			"configure that TPM again, or move the state file away and enroll again with a new token",
			ErrKeyMismatch, stored.DeviceID, db.Path(), kindChange(db, tpmdev.KindNone))
	} else if !errors.Is(err, state.ErrNotFound) {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate software tls key: %w", err)
	}
	der, err = x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode software tls key: %w", err)
	}
	if err := db.Put(kvNamespace, kvSoftwareKey, der); err != nil {
		return nil, fmt.Errorf("store software tls key: %w", err)
	}
	return key, nil
}

func parseSoftwareKey(der []byte) (*ecdsa.PrivateKey, error) {
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		// The parser's error does not contain key material.
		return nil, fmt.Errorf("software tls key in the state file is corrupt: %w", err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, errors.New("software tls key in the state file is not an ECDSA P-256 key")
	}
	return ec, nil
}

// kindChange describes, for an ErrKeyMismatch message, a change between the
// TPM kind the device enrolled with and the one configured now ("" if the
// same or unknown).
func kindChange(db *state.DB, now tpmdev.Kind) string {
	b, err := db.Get(kvNamespace, kvTPMKind)
	if err != nil || tpmdev.Kind(b) == now {
		return ""
	}
	return fmt.Sprintf("; enrolled with tpm kind %s, configured now: %s", b, now)
}
