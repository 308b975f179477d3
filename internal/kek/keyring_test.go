package kek

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// memStore is an in-memory DEKStore with error injection and call counts.
type memStore struct {
	mu      sync.Mutex
	deks    map[dekRef][]byte
	current map[string]uint32
	err     error // returned by every call when set
	calls   int
}

var _ DEKStore = (*memStore)(nil)

func newMemStore() *memStore {
	return &memStore{deks: map[dekRef][]byte{}, current: map[string]uint32{}}
}

func (s *memStore) put(tenant string, version uint32, wrapped []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deks[dekRef{tenant, version}] = bytes.Clone(wrapped)
	if version > s.current[tenant] {
		s.current[tenant] = version
	}
}

func (s *memStore) CurrentDEK(_ context.Context, tenant string) (uint32, []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.err != nil {
		return 0, nil, s.err
	}
	v, ok := s.current[tenant]
	if !ok {
		return 0, nil, fmt.Errorf("tenant %s: %w", tenant, ErrNoKey)
	}
	return v, bytes.Clone(s.deks[dekRef{tenant, v}]), nil
}

func (s *memStore) DEK(_ context.Context, tenant string, version uint32) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.err != nil {
		return nil, s.err
	}
	w, ok := s.deks[dekRef{tenant, version}]
	if !ok {
		return nil, ErrNoKey
	}
	return bytes.Clone(w), nil
}

func (s *memStore) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// fixture is a keyring over a store with tenants acme and globex at DEK v1.
type fixture struct {
	kek   *LocalProvider
	store *memStore
	ring  *Keyring
	now   time.Time
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{kek: memProvider(t, testKey), store: newMemStore(), now: time.Unix(1_700_000_000, 0)}
	f.ring = NewKeyring(f.kek, f.store, KeyringOptions{Now: func() time.Time { return f.now }})
	for _, tenant := range []string{"acme", "globex"} {
		f.addKey(t, tenant, 1)
	}
	return f
}

func (f *fixture) addKey(t testing.TB, tenant string, version uint32) {
	t.Helper()
	w, err := f.ring.NewTenantKey(context.Background(), tenant, version)
	if err != nil {
		t.Fatal(err)
	}
	f.store.put(tenant, version, w)
}

func TestKeyringRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	for _, size := range []int{0, 1, 15, 16, 17, 4096} {
		for _, tenant := range []string{"acme", "globex"} {
			pt := bytes.Repeat([]byte{byte(size)}, size)
			aad := []byte("devices/dev-1/secret")
			env, err := f.ring.Seal(ctx, tenant, pt, aad)
			if err != nil {
				t.Fatal(err)
			}
			if len(env) != envelopeOverhead+size {
				t.Fatalf("envelope of %d bytes is %d bytes", size, len(env))
			}
			got, err := f.ring.Open(ctx, tenant, env, aad)
			if err != nil {
				t.Fatalf("%s, %d bytes: %v", tenant, size, err)
			}
			if !bytes.Equal(got, pt) {
				t.Fatalf("round trip changed the plaintext")
			}
		}
	}
	a, _ := f.ring.Seal(ctx, "acme", []byte("same"), nil)
	b, _ := f.ring.Seal(ctx, "acme", []byte("same"), nil)
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same plaintext are equal: nonce reuse")
	}
}

func TestKeyringOpenFailures(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	aad := []byte("row 7")
	env, err := f.ring.Seal(ctx, "acme", []byte("model weights key"), aad)
	if err != nil {
		t.Fatal(err)
	}
	withVersion := func(v uint32) []byte {
		e := bytes.Clone(env)
		binary.BigEndian.PutUint32(e[1:], v)
		return e
	}
	flip := func(i int) []byte {
		e := bytes.Clone(env)
		e[i] ^= 1
		return e
	}
	otherKEK := NewKeyring(memProvider(t, bytes.Repeat([]byte{3}, KeySize)), f.store, KeyringOptions{})

	tests := []struct {
		name   string
		ring   *Keyring
		tenant string
		env    []byte
		aad    []byte
		want   error
	}{
		{"wrong tenant", f.ring, "globex", env, aad, ErrDecrypt},
		{"tenant without keys", f.ring, "initech", env, aad, ErrNoKey},
		{"wrong aad", f.ring, "acme", env, []byte("row 8"), ErrDecrypt},
		{"missing aad", f.ring, "acme", env, nil, ErrDecrypt},
		{"wrong KEK", otherKEK, "acme", env, aad, ErrWrongKEK},
		{"format version 2", f.ring, "acme", append([]byte{2}, env[1:]...), aad, ErrUnsupportedVersion},
		{"format version 0", f.ring, "acme", append([]byte{0}, env[1:]...), aad, ErrUnsupportedVersion},
		{"dek version 0", f.ring, "acme", withVersion(0), aad, ErrMalformed},
		{"unknown dek version", f.ring, "acme", withVersion(9), aad, ErrNoKey},
		{"flipped nonce", f.ring, "acme", flip(envelopeHeader), aad, ErrDecrypt},
		{"flipped ciphertext", f.ring, "acme", flip(envelopeHeader + nonceSize), aad, ErrDecrypt},
		{"flipped tag", f.ring, "acme", flip(len(env) - 1), aad, ErrDecrypt},
		{"truncated by one", f.ring, "acme", env[:len(env)-1], aad, ErrDecrypt},
		{"truncated to overhead", f.ring, "acme", env[:envelopeOverhead], aad, ErrDecrypt},
		{"shorter than overhead", f.ring, "acme", env[:envelopeOverhead-1], aad, ErrMalformed},
		{"header only", f.ring, "acme", env[:envelopeHeader], aad, ErrMalformed},
		{"empty", f.ring, "acme", nil, aad, ErrMalformed},
		{"trailing byte", f.ring, "acme", append(bytes.Clone(env), 0), aad, ErrDecrypt},
		{"empty tenant", f.ring, "", env, aad, ErrInvalidArgument},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.ring.Open(ctx, tc.tenant, tc.env, tc.aad)
			if !errors.Is(err, tc.want) || got != nil {
				t.Fatalf("Open = %q, %v; want %v", got, err, tc.want)
			}
		})
	}

	// Every bit of the envelope is authenticated.
	for i := range 8 * len(env) {
		e := bytes.Clone(env)
		e[i/8] ^= 1 << (i % 8)
		if _, err := f.ring.Open(ctx, "acme", e, aad); err == nil {
			t.Fatalf("bit %d flipped: Open succeeded", i)
		}
	}
	// Every truncation fails.
	for n := range len(env) {
		if _, err := f.ring.Open(ctx, "acme", env[:n], aad); err == nil {
			t.Fatalf("truncated to %d bytes: Open succeeded", n)
		}
	}
}

// The tenant is bound by the GCM additional data on its own, not only by
// each tenant having its own DEK: with one AEAD shared by two tenants, an
// envelope still does not open as the other tenant's.
func TestEnvelopeBindsTenantWithoutKeySeparation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	env, err := f.ring.Seal(ctx, "acme", []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	f.ring.mu.Lock()
	f.ring.aeads[dekRef{"globex", 1}] = f.ring.aeads[dekRef{"acme", 1}]
	f.ring.mu.Unlock()
	if _, err := f.ring.Open(ctx, "globex", env, nil); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("err = %v, want ErrDecrypt", err)
	}
}

// A wrapped DEK copied from one tenant's row to another's (or to another
// version) does not unwrap.
func TestWrappedDEKMovedBetweenTenants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	acmeDEK, err := f.store.DEK(ctx, "acme", 1)
	if err != nil {
		t.Fatal(err)
	}
	f.store.put("globex", 2, acmeDEK) // globex's current is now acme's key
	f.ring.Forget("globex")
	if _, err := f.ring.Seal(ctx, "globex", []byte("x"), nil); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("seal with a moved DEK: err = %v, want ErrUnwrap", err)
	}
	f.store.put("acme", 2, acmeDEK) // same tenant, other version
	f.ring.Forget("acme")
	if _, err := f.ring.Seal(ctx, "acme", []byte("x"), nil); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("seal with a DEK moved to another version: err = %v, want ErrUnwrap", err)
	}
}

func TestKeyringNoKeyAndStoreErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	if _, err := f.ring.Seal(ctx, "initech", []byte("x"), nil); !errors.Is(err, ErrNoKey) {
		t.Fatalf("seal for a tenant without a DEK: err = %v, want ErrNoKey", err)
	}
	boom := errors.New("database is down")
	f.store.err = boom
	if _, err := f.ring.Seal(ctx, "acme", []byte("x"), nil); !errors.Is(err, boom) {
		t.Fatalf("store error: err = %v, want it wrapped", err)
	}
	if _, err := f.ring.NewTenantKey(ctx, "", 1); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty tenant: err = %v", err)
	}
	if _, err := f.ring.NewTenantKey(ctx, "acme", 0); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("version 0: err = %v", err)
	}
	if _, err := f.ring.Seal(ctx, "", nil, nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("seal for empty tenant: err = %v", err)
	}
}

func TestKeyringCachesDEKs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	env, err := f.ring.Seal(ctx, "acme", []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	before := f.store.callCount()
	for range 10 {
		if _, err := f.ring.Seal(ctx, "acme", []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := f.ring.Open(ctx, "acme", env, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.store.callCount() - before; n != 0 {
		t.Fatalf("cached keyring read the store %d times", n)
	}
	// With the store down, cached keys keep working.
	f.store.err = errors.New("down")
	if _, err := f.ring.Open(ctx, "acme", env, nil); err != nil {
		t.Fatalf("open from cache with the store down: %v", err)
	}
	f.ring.Forget("acme")
	if _, err := f.ring.Open(ctx, "acme", env, nil); err == nil {
		t.Fatal("Forget kept the DEK cached")
	}
}

func TestDEKRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	// A second replica over the same store and KEK.
	replica := NewKeyring(f.kek, f.store, KeyringOptions{CurrentTTL: time.Minute, Now: func() time.Time { return f.now }})

	old, err := f.ring.Seal(ctx, "acme", []byte("v1 data"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := replica.Seal(ctx, "acme", nil, nil); err != nil { // caches v1 as current
		t.Fatal(err)
	}
	f.addKey(t, "acme", 2)

	fresh, err := f.ring.Seal(ctx, "acme", []byte("v2 data"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		env  []byte
		want uint32
	}{{old, 1}, {fresh, 2}} {
		if v, err := EnvelopeKeyVersion(c.env); err != nil || v != c.want {
			t.Fatalf("EnvelopeKeyVersion = %d, %v; want %d", v, err, c.want)
		}
	}
	// Old data stays readable on both replicas.
	for _, r := range []*Keyring{f.ring, replica} {
		for _, env := range [][]byte{old, fresh} {
			if _, err := r.Open(ctx, "acme", env, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The replica seals under v1 until its TTL runs out, then under v2.
	sealVersion := func() uint32 {
		env, err := replica.Seal(ctx, "acme", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		v, _ := EnvelopeKeyVersion(env)
		return v
	}
	if v := sealVersion(); v != 1 {
		t.Fatalf("replica sealed under v%d before its TTL ran out, want v1", v)
	}
	f.now = f.now.Add(time.Minute)
	if v := sealVersion(); v != 2 {
		t.Fatalf("replica sealed under v%d after its TTL, want v2", v)
	}
}

func TestKEKRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	envs := map[string][]byte{}
	for _, tenant := range []string{"acme", "globex"} {
		env, err := f.ring.Seal(ctx, tenant, []byte("secret of "+tenant), nil)
		if err != nil {
			t.Fatal(err)
		}
		envs[tenant] = env
	}
	newKEK := memProvider(t, bytes.Repeat([]byte{0xEE}, KeySize))
	rotated := newMemStore()
	for ref, w := range f.store.deks {
		rw, err := RewrapTenantKey(ctx, f.kek, newKEK, ref.tenant, ref.version, w)
		if err != nil {
			t.Fatal(err)
		}
		rotated.put(ref.tenant, ref.version, rw)
	}
	ring := NewKeyring(newKEK, rotated, KeyringOptions{})
	for tenant, env := range envs {
		got, err := ring.Open(ctx, tenant, env, nil)
		if err != nil || string(got) != "secret of "+tenant {
			t.Fatalf("after KEK rotation: %q, %v", got, err)
		}
	}
	// The rewrap keeps the tenant binding.
	w := rotated.deks[dekRef{"acme", 1}]
	if _, err := RewrapTenantKey(ctx, newKEK, f.kek, "globex", 1, w); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("rewrap under the wrong tenant: err = %v, want ErrUnwrap", err)
	}
	if _, err := RewrapTenantKey(ctx, newKEK, f.kek, "acme", 0, w); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("rewrap of version 0: err = %v, want ErrInvalidArgument", err)
	}
}

func TestKeyringConcurrentUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newFixture(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 16 {
		wg.Go(func() {
			tenant := []string{"acme", "globex"}[i%2]
			for j := range 50 {
				pt := fmt.Appendf(nil, "%d/%d", i, j)
				env, err := f.ring.Seal(ctx, tenant, pt, nil)
				if err == nil {
					var got []byte
					got, err = f.ring.Open(ctx, tenant, env, nil)
					if err == nil && !bytes.Equal(got, pt) {
						err = errors.New("round trip changed the plaintext")
					}
				}
				if err != nil {
					errs <- err
					return
				}
				if j%10 == 0 {
					f.ring.Forget(tenant)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestTenantKeyAADIsUnambiguous(t *testing.T) {
	t.Parallel()
	seen := map[string]string{}
	for _, c := range []struct {
		tenant  string
		version uint32
	}{{"a", 1}, {"a", 2}, {"b", 1}, {"a\x00\x00\x00", 1}, {"ab", 1}} {
		k := string(TenantKeyAAD(c.tenant, c.version))
		if prev, ok := seen[k]; ok {
			t.Fatalf("%q v%d and %s have the same aad", c.tenant, c.version, prev)
		}
		seen[k] = fmt.Sprintf("%q v%d", c.tenant, c.version)
	}
}
