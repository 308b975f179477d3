package attest

import (
	"container/heap"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// NonceSize is the length of a challenge nonce in bytes.
const NonceSize = 32

// Errors of a NonceStore's Consume. Each maps to a verdict reason
// (ReasonForNonceError).
var (
	// ErrNonceUnknown: never issued, issued to another tenant or device, or
	// presented with another value than the one issued.
	ErrNonceUnknown = errors.New("attest: nonce unknown")
	// ErrNonceExpired: issued, but presented after its expiry.
	ErrNonceExpired = errors.New("attest: nonce expired")
	// ErrNonceReplayed: already consumed.
	ErrNonceReplayed = errors.New("attest: nonce replayed")
	// ErrTooManyNonces is returned by MemoryNonces.Issue when MaxOutstanding
	// nonces are live.
	ErrTooManyNonces = errors.New("attest: too many outstanding nonces")
)

// ReasonForNonceError returns the verdict reason code for an error of
// NonceStore.Consume, and ok=false for an error that is not one of its
// sentinels (a store failure, which says nothing about the device).
func ReasonForNonceError(err error) (code string, ok bool) {
	switch {
	case errors.Is(err, ErrNonceUnknown):
		return wire.ReasonNonceUnknown, true
	case errors.Is(err, ErrNonceExpired):
		return wire.ReasonNonceExpired, true
	case errors.Is(err, ErrNonceReplayed):
		return wire.ReasonNonceReplayed, true
	}
	return "", false
}

// Nonce is an issued challenge nonce.
type Nonce struct {
	ID        string // challenge id, echoed in the evidence
	Value     []byte // NonceSize random bytes, the quote's extraData
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// Challenge is the message that sends n to a device, asking for a quote of
// the SHA-256 PCRs pcrs (use Policy.Selection).
func (n Nonce) Challenge(pcrs []int) wire.AttestChallenge {
	return wire.AttestChallenge{
		Schema:    wire.AttestChallengeSchema,
		ID:        n.ID,
		Nonce:     n.Value,
		PCRs:      pcrs,
		IssuedAt:  n.IssuedAt,
		ExpiresAt: n.ExpiresAt,
	}
}

// NonceStore issues and consumes challenge nonces. Implementations must make
// Consume succeed at most once per issued nonce, even across replicas.
type NonceStore interface {
	// Issue creates a nonce for one device of one tenant, valid for ttl.
	Issue(ctx context.Context, tenant, device string, ttl time.Duration) (Nonce, error)
	// Consume marks the nonce used and returns when it was issued. It
	// returns ErrNonceUnknown, ErrNonceExpired or ErrNonceReplayed when the
	// presentation is not acceptable, or another error when the store
	// failed.
	Consume(ctx context.Context, tenant, device, id string, nonce []byte) (issuedAt time.Time, err error)
}

var _ NonceStore = (*MemoryNonces)(nil)

// MemoryNonces is an in-process NonceStore for a single control-plane node.
// It is safe for concurrent use. Its memory is bounded: at most
// MaxOutstanding nonces exist at once, and each is forgotten Retain after it
// expires (until then a second presentation is reported as a replay, and a
// late one as expired; afterwards both are unknown, which is still refused).
type MemoryNonces struct {
	// MaxOutstanding bounds the number of nonces kept (default 100,000).
	MaxOutstanding int
	// Retain is how long an expired or consumed nonce is remembered after
	// its expiry (default one minute).
	Retain time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Rand is the source of nonce values (default crypto/rand). Ids always
	// come from crypto/rand. Only benchmarks, which must re-use one quote,
	// have reason to set it.
	Rand io.Reader

	mu      sync.Mutex
	byID    map[string]*nonceEntry
	byForgt forgetHeap
}

type nonceEntry struct {
	id             string
	tenant, device string
	value          []byte
	issuedAt       time.Time
	expiresAt      time.Time
	forgetAt       time.Time
	used           bool
}

// NewMemoryNonces returns an empty MemoryNonces with the default limits.
func NewMemoryNonces() *MemoryNonces { return &MemoryNonces{} }

func (m *MemoryNonces) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *MemoryNonces) limits() (maxN int, retain time.Duration) {
	maxN, retain = m.MaxOutstanding, m.Retain
	if maxN <= 0 {
		maxN = 100_000
	}
	if retain <= 0 {
		retain = time.Minute
	}
	return maxN, retain
}

// Issue implements NonceStore.
func (m *MemoryNonces) Issue(ctx context.Context, tenant, device string, ttl time.Duration) (Nonce, error) {
	if err := ctx.Err(); err != nil {
		return Nonce{}, err
	}
	if tenant == "" || device == "" || ttl <= 0 {
		return Nonce{}, fmt.Errorf("issue nonce: tenant, device and a positive ttl are required")
	}
	var idb [16]byte
	value := make([]byte, NonceSize)
	// crypto/rand.Read never fails (Go 1.24+); it crashes the program instead.
	_, _ = rand.Read(idb[:])
	if m.Rand == nil {
		_, _ = rand.Read(value)
	} else if _, err := io.ReadFull(m.Rand, value); err != nil {
		return Nonce{}, fmt.Errorf("issue nonce: %w", err)
	}
	now := m.now()
	maxN, retain := m.limits()
	e := &nonceEntry{
		id: hex.EncodeToString(idb[:]), tenant: tenant, device: device, value: value,
		issuedAt: now, expiresAt: now.Add(ttl), forgetAt: now.Add(ttl + retain),
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	m.forgetLocked(now)
	if len(m.byID) >= maxN {
		return Nonce{}, ErrTooManyNonces
	}
	if m.byID == nil {
		m.byID = make(map[string]*nonceEntry)
	}
	m.byID[e.id] = e
	heap.Push(&m.byForgt, e)
	return Nonce{ID: e.id, Value: append([]byte(nil), value...), IssuedAt: e.issuedAt, ExpiresAt: e.expiresAt}, nil
}

// Consume implements NonceStore.
func (m *MemoryNonces) Consume(ctx context.Context, tenant, device, id string, nonce []byte) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.forgetLocked(now)
	e, ok := m.byID[id]
	if !ok {
		return time.Time{}, ErrNonceUnknown
	}
	// Tenant and device are not secret, the value is: compare it in
	// constant time. A mismatch leaves the nonce for its rightful device.
	if e.tenant != tenant || e.device != device || subtle.ConstantTimeCompare(e.value, nonce) != 1 {
		return time.Time{}, ErrNonceUnknown
	}
	if e.used {
		return time.Time{}, ErrNonceReplayed
	}
	if now.After(e.expiresAt) {
		return time.Time{}, ErrNonceExpired
	}
	e.used = true
	return e.issuedAt, nil
}

// Len returns the number of nonces remembered (outstanding, consumed or
// expired but not yet forgotten).
func (m *MemoryNonces) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.byID)
}

func (m *MemoryNonces) forgetLocked(now time.Time) {
	for m.byForgt.Len() > 0 && !m.byForgt[0].forgetAt.After(now) {
		e := heap.Pop(&m.byForgt).(*nonceEntry)
		delete(m.byID, e.id)
	}
}

// forgetHeap orders entries by forgetAt (TTLs may differ, so issue order is
// not expiry order).
type forgetHeap []*nonceEntry

func (h forgetHeap) Len() int           { return len(h) }
func (h forgetHeap) Less(i, j int) bool { return h[i].forgetAt.Before(h[j].forgetAt) }
func (h forgetHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *forgetHeap) Push(x any)        { *h = append(*h, x.(*nonceEntry)) }
func (h *forgetHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}
