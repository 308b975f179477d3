package keys

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"

	"github.com/tensorguard/tensorguardflow/agent/internal/state"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// Where the key lives in the state's key/value space.
const (
	Namespace     = "kem"
	keyRecord     = "key"
	keyRegistered = "registered"
)

// Protections a stored key can have.
const (
	ProtectionTPM      = "tpm-sealed" // the private key is sealed by the device's TPM
	ProtectionSoftware = "software"   // tpm.none: the private key is in the state file as it is
)

// pemRecipientPrivate is the PEM type of a tgsp recipient private key file
// (tgsp/SPEC.md §6), whose body is what gets sealed.
const pemRecipientPrivate = "TGSP RECIPIENT PRIVATE KEY"

// Errors; returned errors wrap them.
var (
	// ErrNoKey: the device has no KEM key yet (enrolled by an agent from
	// before key grants, or not enrolled).
	ErrNoKey = errors.New("keys: device has no KEM key")
	// ErrProtection: the key is TPM-sealed but no TPM was given (the
	// agent's tpm setting changed since enrollment).
	ErrProtection = errors.New("keys: KEM key is sealed by a TPM, and none is configured")
)

// Store is the agent state the key is kept in (*state.DB); Get returns an
// error wrapping state.ErrNotFound for a missing key.
type Store interface {
	Get(ns, key string) ([]byte, error)
	Put(ns, key string, value []byte) error
	Delete(ns, key string) error
}

// Sealer is the TPM (*tpmdev.Device).
type Sealer interface {
	Seal(data []byte) (tpmdev.SealedBlob, error)
	Unseal(blob tpmdev.SealedBlob) ([]byte, error)
}

var (
	_ Store  = (*state.DB)(nil)
	_ Sealer = (*tpmdev.Device)(nil)
)

// record is the stored key. Field names are part of the on-disk format.
type record struct {
	Version    int    `json:"version"`
	Protection string `json:"protection"`
	// Public is the tgsp recipient public key body (RecipientPublicKey.Bytes).
	Public []byte `json:"public"`
	// Sealed is the tpmdev.SealedBlob (MarshalBinary) of the private key
	// body, for ProtectionTPM.
	Sealed []byte `json:"sealed,omitempty"`
	// Private is the private key body itself, for ProtectionSoftware only.
	Private []byte `json:"private,omitempty"`
}

const recordVersion = 1

// Custodian keeps the device's KEM key in a Store, sealed by a TPM when it
// has one. It is safe for concurrent use as far as its Store and Sealer
// are (state.DB and tpmdev.Device are).
type Custodian struct {
	store Store
	tpm   Sealer
}

// New returns a Custodian over store. tpm is the device's TPM, or nil for
// a device without one (tpm.none), whose key is then stored unprotected.
func New(store Store, tpm Sealer) *Custodian {
	return &Custodian{store: store, tpm: tpm}
}

// Generate creates a new key pair from rnd (crypto/rand if nil), protects
// its private part (TPM seal, or as it is without a TPM) and stores it in
// place of any previous key, which is then no longer registered. It
// returns the public key for the enrollment request.
func (c *Custodian) Generate(rnd io.Reader) (*tgsp.RecipientPublicKey, error) {
	priv, err := tgsp.GenerateRecipient(rnd)
	if err != nil {
		return nil, fmt.Errorf("generate KEM key: %w", err)
	}
	body, err := privateBody(priv)
	if err != nil {
		return nil, err
	}
	defer clear(body)
	rec := record{Version: recordVersion, Public: priv.Public().Bytes()}
	if c.tpm != nil {
		blob, err := c.tpm.Seal(body)
		if err != nil {
			return nil, fmt.Errorf("seal KEM key: %w", err)
		}
		if rec.Sealed, err = blob.MarshalBinary(); err != nil {
			return nil, fmt.Errorf("seal KEM key: %w", err)
		}
		rec.Protection = ProtectionTPM
	} else {
		rec.Protection, rec.Private = ProtectionSoftware, bytes.Clone(body)
	}
	raw, err := json.Marshal(rec)
	clear(rec.Private)
	if err != nil {
		return nil, fmt.Errorf("store KEM key: %w", err)
	}
	err = c.store.Put(Namespace, keyRecord, raw)
	clear(raw)
	if err != nil {
		return nil, fmt.Errorf("store KEM key: %w", err)
	}
	// A registration recorded for the previous key must not count for
	// this one (Registered compares key ids as well).
	if err := c.store.Delete(Namespace, keyRegistered); err != nil {
		return nil, fmt.Errorf("store KEM key: %w", err)
	}
	return priv.Public(), nil
}

// privateBody is the key's tgsp body: algorithm byte ‖ 32-byte seed.
func privateBody(k *tgsp.RecipientPrivateKey) ([]byte, error) {
	b, _ := pem.Decode(k.MarshalPEM())
	if b == nil || b.Type != pemRecipientPrivate || len(b.Bytes) > tpmdev.MaxSealSize {
		return nil, errors.New("keys: unexpected tgsp recipient key encoding")
	}
	return b.Bytes, nil
}

func (c *Custodian) load() (record, error) {
	raw, err := c.store.Get(Namespace, keyRecord)
	if errors.Is(err, state.ErrNotFound) {
		return record{}, ErrNoKey
	}
	if err != nil {
		return record{}, fmt.Errorf("read KEM key: %w", err)
	}
	defer clear(raw)
	var rec record
	if err := json.Unmarshal(raw, &rec); err != nil {
		return record{}, fmt.Errorf("KEM key record in the state file is corrupt: %w", err)
	}
	if rec.Version != recordVersion {
		return record{}, fmt.Errorf("KEM key record version %d is not supported (want %d)", rec.Version, recordVersion)
	}
	return rec, nil
}

// Public returns the stored public key, or ErrNoKey.
func (c *Custodian) Public() (*tgsp.RecipientPublicKey, error) {
	rec, err := c.load()
	if err != nil {
		return nil, err
	}
	clear(rec.Private)
	pub, err := tgsp.ParseRecipientPublicKeyBytes(rec.Public)
	if err != nil {
		return nil, fmt.Errorf("KEM public key in the state file: %w", err)
	}
	return pub, nil
}

// Protection says how the stored private key is protected
// (ProtectionTPM or ProtectionSoftware), or ErrNoKey.
func (c *Custodian) Protection() (string, error) {
	rec, err := c.load()
	clear(rec.Private)
	return rec.Protection, err
}

// Registered reports whether the control plane has the stored key (the
// enrollment carried it, or PUT /api/v1/device/kem-key accepted it).
func (c *Custodian) Registered() (bool, error) {
	pub, err := c.Public()
	if errors.Is(err, ErrNoKey) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	id, err := c.store.Get(Namespace, keyRegistered)
	if errors.Is(err, state.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read KEM key registration: %w", err)
	}
	return string(id) == pub.KeyID(), nil
}

// SetRegistered records that the control plane has the stored key.
func (c *Custodian) SetRegistered() error {
	pub, err := c.Public()
	if err != nil {
		return err
	}
	if err := c.store.Put(Namespace, keyRegistered, []byte(pub.KeyID())); err != nil {
		return fmt.Errorf("record KEM key registration: %w", err)
	}
	return nil
}

// privateKey recovers the private key: unsealed by the TPM, or read as it
// is for a device without one. It checks that it belongs to the stored
// public key.
func (c *Custodian) privateKey() (*tgsp.RecipientPrivateKey, error) {
	rec, err := c.load()
	if err != nil {
		return nil, err
	}
	var body []byte
	switch rec.Protection {
	case ProtectionTPM:
		if c.tpm == nil {
			return nil, ErrProtection
		}
		var blob tpmdev.SealedBlob
		if err := blob.UnmarshalBinary(rec.Sealed); err != nil {
			return nil, fmt.Errorf("sealed KEM key in the state file: %w", err)
		}
		if body, err = c.tpm.Unseal(blob); err != nil {
			return nil, fmt.Errorf("unseal KEM key: %w", err)
		}
	case ProtectionSoftware:
		body = rec.Private
	default:
		return nil, fmt.Errorf("KEM key record has unknown protection %q", rec.Protection)
	}
	block := pem.EncodeToMemory(&pem.Block{Type: pemRecipientPrivate, Bytes: body})
	clear(body)
	priv, err := tgsp.ParseRecipientPrivateKey(block)
	clear(block)
	if err != nil {
		return nil, fmt.Errorf("KEM private key: %w", err)
	}
	if subtle.ConstantTimeCompare(priv.Public().Bytes(), rec.Public) != 1 {
		return nil, errors.New("keys: the stored KEM private key does not belong to the stored public key")
	}
	return priv, nil
}

// OpenGrant opens a key grant for pkg (a tgsp stanza wrapping pkg's DEK to
// this device's KEM public key, as tgsp.Package.GrantKey makes it) with
// the private key, unsealed by the TPM for this call only. pkg must have
// been verified (tgsp.Package.VerifySignature); the DEK is accepted only if
// it matches the signed commitment. A grant made for another key fails
// with tgsp.ErrNotRecipient (or tgsp.ErrDecrypt).
func (c *Custodian) OpenGrant(pkg *tgsp.Package, grant []byte) (*tgsp.DEK, error) {
	priv, err := c.privateKey()
	if err != nil {
		return nil, fmt.Errorf("open key grant: %w", err)
	}
	dek, err := pkg.OpenGrant(grant, priv)
	if err != nil {
		return nil, fmt.Errorf("open key grant: %w", err)
	}
	return dek, nil
}
