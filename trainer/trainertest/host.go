// Package trainertest holds fakes with real behaviour for tests of the
// trainer and of what mounts it: a Host with API keys, tenant data keys
// under a KEK, per-tenant audit hash chains and export keys, all in memory.
package trainertest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/audit"
	"github.com/tensorguard/tensorguardflow/internal/kek"
	"github.com/tensorguard/tensorguardflow/tgsp"
	"github.com/tensorguard/tensorguardflow/trainer"
)

// Host is an in-memory trainer.Host.
type Host struct {
	mu      sync.Mutex
	keys    map[string]trainer.Principal // bearer token → principal
	dek     *memDEKs
	ring    *kek.Keyring
	chains  map[string][]audit.Entry
	signers map[string]*tgsp.SignerPrivateKey
	recips  map[string]*tgsp.RecipientPrivateKey
	// FailAudit, when set, makes Audit fail (error injection).
	FailAudit error
}

var _ trainer.Host = (*Host)(nil)

// NewHost returns a Host with no API keys.
func NewHost() *Host {
	key := make([]byte, kek.KeySize)
	for i := range key {
		key[i] = byte(i*7 + 3)
	}
	p, err := kek.NewMemoryProvider(key)
	if err != nil {
		panic(err)
	}
	d := &memDEKs{wrapped: map[string][][]byte{}}
	h := &Host{keys: map[string]trainer.Principal{}, dek: d, chains: map[string][]audit.Entry{},
		signers: map[string]*tgsp.SignerPrivateKey{}, recips: map[string]*tgsp.RecipientPrivateKey{}}
	// A rotation applies to the next seal at once (the control plane's
	// keyring re-reads the current version every minute).
	h.ring = kek.NewKeyring(p, d, kek.KeyringOptions{CurrentTTL: time.Nanosecond})
	d.ring = h.ring
	return h
}

// AddKey makes token authenticate as tenant (read-only when !write).
func (h *Host) AddKey(token, tenant, keyID string, write bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.keys[token] = trainer.Principal{Tenant: tenant, KeyID: keyID, CanWrite: write}
}

// Authenticate implements trainer.Host.
func (h *Host) Authenticate(r *http.Request) (trainer.Principal, error) {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	h.mu.Lock()
	p, known := h.keys[tok]
	h.mu.Unlock()
	if !ok || !strings.EqualFold(scheme, "Bearer") || !known {
		return trainer.Principal{}, trainer.ErrUnauthenticated
	}
	return p, nil
}

// Seal implements trainer.Host.
func (h *Host) Seal(ctx context.Context, tenant string, plaintext, aad []byte) ([]byte, error) {
	if err := h.dek.ensure(ctx, tenant); err != nil {
		return nil, err
	}
	return h.ring.Seal(ctx, tenant, plaintext, aad)
}

// Open implements trainer.Host.
func (h *Host) Open(ctx context.Context, tenant string, envelope, aad []byte) ([]byte, error) {
	return h.ring.Open(ctx, tenant, envelope, aad)
}

// Rotate gives tenant a new data key version (old envelopes stay readable).
func (h *Host) Rotate(ctx context.Context, tenant string) error { return h.dek.rotate(ctx, tenant) }

// Audit implements trainer.Host.
func (h *Host) Audit(_ context.Context, tenant, actor, action, target string, details any) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.FailAudit != nil {
		return "", h.FailAudit
	}
	raw, err := jsonOf(details)
	if err != nil {
		return "", err
	}
	chain := h.chains[tenant]
	var prev *audit.Entry
	if len(chain) > 0 {
		prev = &chain[len(chain)-1]
	}
	e, err := audit.Next(prev, audit.Entry{Tenant: tenant, Time: time.Now(), Actor: actor, Action: action, Target: target, Details: raw})
	if err != nil {
		return "", err
	}
	h.chains[tenant] = append(chain, e)
	return e.Hash.String(), nil
}

// AuditLog returns tenant's chain.
func (h *Host) AuditLog(tenant string) []audit.Entry {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]audit.Entry(nil), h.chains[tenant]...)
}

// ExportKeys implements trainer.Host: one signer and one recipient per
// tenant, made on first use.
func (h *Host) ExportKeys(_ context.Context, tenant string) (*tgsp.SignerPrivateKey, []*tgsp.RecipientPublicKey, error) {
	s, r, err := h.keysOf(tenant)
	if err != nil {
		return nil, nil, err
	}
	return s, []*tgsp.RecipientPublicKey{r.Public()}, nil
}

// PackageKeys returns the keys exported packages of tenant are signed by
// and packed to.
func (h *Host) PackageKeys(tenant string) (*tgsp.SignerPublicKey, *tgsp.RecipientPrivateKey, error) {
	s, r, err := h.keysOf(tenant)
	if err != nil {
		return nil, nil, err
	}
	return s.Public(), r, nil
}

func (h *Host) keysOf(tenant string) (*tgsp.SignerPrivateKey, *tgsp.RecipientPrivateKey, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.signers[tenant] == nil {
		s, err := tgsp.GenerateSigner(nil)
		if err != nil {
			return nil, nil, err
		}
		r, err := tgsp.GenerateRecipient(nil)
		if err != nil {
			return nil, nil, err
		}
		h.signers[tenant], h.recips[tenant] = s, r
	}
	return h.signers[tenant], h.recips[tenant], nil
}

func jsonOf(v any) ([]byte, error) {
	if v == nil {
		return nil, nil
	}
	return json.Marshal(v)
}

// memDEKs is an in-memory kek.DEKStore.
type memDEKs struct {
	mu      sync.Mutex
	ring    *kek.Keyring
	wrapped map[string][][]byte // tenant → versions (index version-1)
}

func (d *memDEKs) CurrentDEK(_ context.Context, tenant string) (uint32, []byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.wrapped[tenant]
	if len(v) == 0 {
		return 0, nil, fmt.Errorf("%w: %s", kek.ErrNoKey, tenant)
	}
	return uint32(len(v)), v[len(v)-1], nil
}

func (d *memDEKs) DEK(_ context.Context, tenant string, version uint32) ([]byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	v := d.wrapped[tenant]
	if version == 0 || int(version) > len(v) {
		return nil, fmt.Errorf("%w: %s v%d", kek.ErrNoKey, tenant, version)
	}
	return v[version-1], nil
}

func (d *memDEKs) ensure(ctx context.Context, tenant string) error {
	d.mu.Lock()
	n := len(d.wrapped[tenant])
	d.mu.Unlock()
	if n > 0 {
		return nil
	}
	return d.rotate(ctx, tenant)
}

func (d *memDEKs) rotate(ctx context.Context, tenant string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	w, err := d.ring.NewTenantKey(ctx, tenant, uint32(len(d.wrapped[tenant])+1))
	if err != nil {
		return err
	}
	d.wrapped[tenant] = append(d.wrapped[tenant], w)
	return nil
}
