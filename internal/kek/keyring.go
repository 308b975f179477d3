package kek

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"
	"time"
)

// DEKStore is where wrapped tenant data keys (DEKs) live: the control
// plane's database. The Keyring only reads it; the caller writes what
// NewTenantKey and RewrapTenantKey return. Versions start at 1 and the
// current version is the one new data is sealed under.
type DEKStore interface {
	// CurrentDEK returns the version and wrapped bytes of the tenant's
	// current data key, or an error wrapping ErrNoKey if it has none.
	CurrentDEK(ctx context.Context, tenant string) (version uint32, wrapped []byte, err error)
	// DEK returns the wrapped bytes of one version of the tenant's data
	// key, or an error wrapping ErrNoKey if there is no such version.
	DEK(ctx context.Context, tenant string, version uint32) (wrapped []byte, err error)
}

// Envelope format, version 1 (all integers big-endian):
//
//	0x01 | DEK version (4) | nonce (12) | AES-256-GCM ciphertext and tag (16)
//
// The GCM additional data is
//
//	envelopeAADPrefix | len(tenant) (4) | tenant | first 5 bytes of the envelope | caller's aad
//
// so an envelope opened for another tenant, with another aad, or with its
// header changed fails with ErrDecrypt even where the key would match.
const (
	envelopeV1        = 0x01
	envelopeHeader    = 1 + 4
	nonceSize         = 12
	tagSize           = 16
	envelopeOverhead  = envelopeHeader + nonceSize + tagSize
	envelopeAADPrefix = "tensorguardflow tenant envelope v1\x00"
	dekAADPrefix      = "tensorguardflow tenant dek v1\x00"

	// DefaultCurrentTTL is how long a Keyring keeps using the current DEK
	// version it last read before asking the DEKStore again.
	DefaultCurrentTTL = time.Minute
)

// KeyringOptions tunes a Keyring. The zero value is the default.
type KeyringOptions struct {
	// CurrentTTL bounds how long Seal keeps sealing under a cached current
	// version after another replica rotated the tenant's DEK (default
	// DefaultCurrentTTL). A retired DEK version must stay in the store,
	// readable, for longer than this plus the time to re-encrypt.
	CurrentTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Keyring seals and opens tenant data under per-tenant DEKs, which are
// stored wrapped under the KEK of a Provider. Unwrapped DEKs are cached in
// memory for the life of the Keyring (until Forget). It is safe for
// concurrent use.
type Keyring struct {
	kek   Provider
	store DEKStore
	ttl   time.Duration
	now   func() time.Time

	mu      sync.RWMutex
	aeads   map[dekRef]cipher.AEAD
	current map[string]currentDEK
}

type dekRef struct {
	tenant  string
	version uint32
}

type currentDEK struct {
	version uint32
	read    time.Time
}

// NewKeyring returns a Keyring that unwraps DEKs from store with kek.
func NewKeyring(kek Provider, store DEKStore, opts KeyringOptions) *Keyring {
	k := &Keyring{
		kek:     kek,
		store:   store,
		ttl:     opts.CurrentTTL,
		now:     opts.Now,
		aeads:   make(map[dekRef]cipher.AEAD),
		current: make(map[string]currentDEK),
	}
	if k.ttl <= 0 {
		k.ttl = DefaultCurrentTTL
	}
	if k.now == nil {
		k.now = time.Now
	}
	return k
}

// NewTenantKey generates a fresh DEK for tenant and returns it wrapped
// under the KEK, bound to tenant and version, for the caller to store as
// that version (1 for a new tenant; current+1 to rotate). The plaintext
// DEK is not kept: the keyring reads it back from the store when it is
// first used, so a DEK that failed to persist is never used.
func (k *Keyring) NewTenantKey(ctx context.Context, tenant string, version uint32) ([]byte, error) {
	if err := checkRef(tenant, version); err != nil {
		return nil, err
	}
	var dek [KeySize]byte
	if _, err := rand.Read(dek[:]); err != nil {
		return nil, fmt.Errorf("generate dek: %w", err)
	}
	defer clear(dek[:])
	wrapped, err := k.kek.WrapKey(ctx, dek[:], TenantKeyAAD(tenant, version))
	if err != nil {
		return nil, fmt.Errorf("tenant %s: wrap dek v%d: %w", tenant, version, err)
	}
	// This replica's next Seal picks up the new version at once.
	k.mu.Lock()
	delete(k.current, tenant)
	k.mu.Unlock()
	return wrapped, nil
}

// Seal encrypts plaintext for tenant under the tenant's current DEK. aad
// is authenticated but not encrypted (e.g. the table and row id, so a
// ciphertext cannot be moved to another row); Open needs the same aad.
//
// Nonces are random (96 bits): rotate a tenant's DEK before it has sealed
// 2^32 messages.
func (k *Keyring) Seal(ctx context.Context, tenant string, plaintext, aad []byte) ([]byte, error) {
	if err := checkTenant(tenant); err != nil {
		return nil, err
	}
	version, aead, err := k.currentAEAD(ctx, tenant)
	if err != nil {
		return nil, err
	}
	out := make([]byte, envelopeHeader+nonceSize, envelopeOverhead+len(plaintext))
	out[0] = envelopeV1
	binary.BigEndian.PutUint32(out[1:envelopeHeader], version)
	nonce := out[envelopeHeader:]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal: nonce: %w", err)
	}
	return aead.Seal(out, nonce, plaintext, envelopeAAD(tenant, out[:envelopeHeader], aad)), nil
}

// Open decrypts an envelope written by Seal for tenant with the same aad,
// under whichever DEK version sealed it. It fails with ErrMalformed,
// ErrUnsupportedVersion, ErrNoKey (the version is unknown for this
// tenant) or ErrDecrypt, and returns plaintext only if it is authentic.
func (k *Keyring) Open(ctx context.Context, tenant string, envelope, aad []byte) ([]byte, error) {
	if err := checkTenant(tenant); err != nil {
		return nil, err
	}
	version, err := EnvelopeKeyVersion(envelope)
	if err != nil {
		return nil, err
	}
	aead, err := k.aead(ctx, tenant, version)
	if err != nil {
		return nil, err
	}
	nonce := envelope[envelopeHeader : envelopeHeader+nonceSize]
	pt, err := aead.Open(nil, nonce, envelope[envelopeHeader+nonceSize:], envelopeAAD(tenant, envelope[:envelopeHeader], aad))
	if err != nil {
		return nil, fmt.Errorf("%w: tenant %s envelope (dek v%d)", ErrDecrypt, tenant, version)
	}
	return pt, nil
}

// EnvelopeKeyVersion returns the DEK version an envelope was sealed under,
// checking only its framing. A re-encryption job uses it to find data
// still sealed under an old version.
func EnvelopeKeyVersion(envelope []byte) (uint32, error) {
	if len(envelope) == 0 {
		return 0, malformed("envelope is empty")
	}
	if envelope[0] != envelopeV1 {
		return 0, fmt.Errorf("%w: envelope format %d", ErrUnsupportedVersion, envelope[0])
	}
	if len(envelope) < envelopeOverhead {
		return 0, malformed("envelope has %d bytes, the minimum is %d", len(envelope), envelopeOverhead)
	}
	version := binary.BigEndian.Uint32(envelope[1:envelopeHeader])
	if version == 0 {
		return 0, malformed("envelope names dek version 0")
	}
	return version, nil
}

// Forget drops every cached DEK of tenant, so the next use reads the store
// again: call it after deleting a tenant or retiring its keys.
func (k *Keyring) Forget(tenant string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.current, tenant)
	for ref := range k.aeads {
		if ref.tenant == tenant {
			delete(k.aeads, ref)
		}
	}
}

// RewrapTenantKey moves one stored tenant DEK from oldKEK to newKEK (see
// Rewrap), with the same binding to tenant and version that NewTenantKey
// used.
func RewrapTenantKey(ctx context.Context, oldKEK, newKEK Provider, tenant string, version uint32, wrapped []byte) ([]byte, error) {
	if err := checkRef(tenant, version); err != nil {
		return nil, err
	}
	out, err := Rewrap(ctx, oldKEK, newKEK, wrapped, TenantKeyAAD(tenant, version))
	if err != nil {
		return nil, fmt.Errorf("tenant %s dek v%d: %w", tenant, version, err)
	}
	return out, nil
}

// TenantKeyAAD is the aad a tenant DEK is wrapped under:
// prefix | len(tenant) (4) | tenant | version (4). A wrapped DEK copied to
// another tenant or version does not unwrap.
func TenantKeyAAD(tenant string, version uint32) []byte {
	b := make([]byte, 0, len(dekAADPrefix)+4+len(tenant)+4)
	b = append(b, dekAADPrefix...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(tenant)))
	b = append(b, tenant...)
	return binary.BigEndian.AppendUint32(b, version)
}

func envelopeAAD(tenant string, header, aad []byte) []byte {
	b := make([]byte, 0, len(envelopeAADPrefix)+4+len(tenant)+len(header)+len(aad))
	b = append(b, envelopeAADPrefix...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(tenant)))
	b = append(b, tenant...)
	b = append(b, header...)
	return append(b, aad...)
}

// maxTenantLen bounds tenant ids far above the slug rule (63) so a length
// always fits its prefix.
const maxTenantLen = 1024

func checkTenant(tenant string) error {
	if tenant == "" || len(tenant) > maxTenantLen {
		return invalid("tenant id must be 1 to %d bytes, got %d", maxTenantLen, len(tenant))
	}
	return nil
}

func checkRef(tenant string, version uint32) error {
	if err := checkTenant(tenant); err != nil {
		return err
	}
	if version == 0 {
		return invalid("dek versions start at 1")
	}
	return nil
}

// currentAEAD returns the tenant's current DEK version and its AEAD.
func (k *Keyring) currentAEAD(ctx context.Context, tenant string) (uint32, cipher.AEAD, error) {
	now := k.now()
	k.mu.RLock()
	cur, ok := k.current[tenant]
	var aead cipher.AEAD
	if ok && now.Sub(cur.read) < k.ttl {
		aead = k.aeads[dekRef{tenant, cur.version}]
	}
	k.mu.RUnlock()
	if aead != nil {
		return cur.version, aead, nil
	}

	version, wrapped, err := k.store.CurrentDEK(ctx, tenant)
	if err != nil {
		return 0, nil, fmt.Errorf("tenant %s: current dek: %w", tenant, err)
	}
	if version == 0 {
		return 0, nil, fmt.Errorf("tenant %s: %w: store returned current dek version 0", tenant, ErrMalformed)
	}
	aead, err = k.unwrap(ctx, tenant, version, wrapped)
	if err != nil {
		return 0, nil, err
	}
	k.mu.Lock()
	k.current[tenant] = currentDEK{version: version, read: now}
	k.mu.Unlock()
	return version, aead, nil
}

// aead returns the AEAD of one DEK version, reading the store on a miss.
func (k *Keyring) aead(ctx context.Context, tenant string, version uint32) (cipher.AEAD, error) {
	k.mu.RLock()
	aead := k.aeads[dekRef{tenant, version}]
	k.mu.RUnlock()
	if aead != nil {
		return aead, nil
	}
	wrapped, err := k.store.DEK(ctx, tenant, version)
	if err != nil {
		return nil, fmt.Errorf("tenant %s: dek v%d: %w", tenant, version, err)
	}
	return k.unwrap(ctx, tenant, version, wrapped)
}

// unwrap unwraps a DEK, builds its AEAD and caches it.
func (k *Keyring) unwrap(ctx context.Context, tenant string, version uint32, wrapped []byte) (cipher.AEAD, error) {
	dek, err := k.kek.UnwrapKey(ctx, wrapped, TenantKeyAAD(tenant, version))
	if err != nil {
		return nil, fmt.Errorf("tenant %s: unwrap dek v%d: %w", tenant, version, err)
	}
	defer clear(dek)
	if len(dek) != KeySize {
		return nil, fmt.Errorf("tenant %s: %w: dek v%d has %d bytes, want %d", tenant, ErrMalformed, version, len(dek), KeySize)
	}
	b, err := aes.NewCipher(dek)
	if err != nil {
		return nil, fmt.Errorf("tenant %s: dek v%d: %w", tenant, version, err)
	}
	aead, err := cipher.NewGCM(b)
	if err != nil {
		return nil, fmt.Errorf("tenant %s: dek v%d: %w", tenant, version, err)
	}
	k.mu.Lock()
	k.aeads[dekRef{tenant, version}] = aead
	k.mu.Unlock()
	return aead, nil
}
