package store

import (
	"bytes"
	"context"
	"testing"
)

// TestSetDeviceKEMPublic: a device without a KEM key gets one once; the
// same key again is a no-op, another key a conflict; the key is stored
// with the device and never crosses tenants.
func TestSetDeviceKEMPublic(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		fx := mustFixture(t, s, "acme")
		mustFixture(t, s, "other")
		d := mustDevice(t, s, "acme", fx.fleet.ID, "ek1")
		if d.KEMPublic != nil {
			t.Fatalf("new device has a KEM key %x", d.KEMPublic)
		}
		key, another := []byte("kem public key one"), []byte("kem public key two")

		_, _, err := s.SetDeviceKEMPublic(ctx, "other", d.ID, key)
		wantErr(t, "device of another tenant", err, ErrNotFound)
		_, _, err = s.SetDeviceKEMPublic(ctx, "acme", NewID(PrefixDevice), key)
		wantErr(t, "unknown device", err, ErrNotFound)
		_, _, err = s.SetDeviceKEMPublic(ctx, "acme", d.ID, nil)
		wantErr(t, "empty key", err, ErrInvalid)

		got, set, err := s.SetDeviceKEMPublic(ctx, "acme", d.ID, key)
		if err != nil || !set || !bytes.Equal(got.KEMPublic, key) || got.ID != d.ID {
			t.Fatalf("first key: %+v, set %v, %v", got, set, err)
		}
		got, set, err = s.SetDeviceKEMPublic(ctx, "acme", d.ID, key)
		if err != nil || set || !bytes.Equal(got.KEMPublic, key) {
			t.Fatalf("same key again: set %v, %v", set, err)
		}
		_, _, err = s.SetDeviceKEMPublic(ctx, "acme", d.ID, another)
		wantErr(t, "another key", err, ErrConflict)
		if got, err := s.GetDevice(ctx, "acme", d.ID); err != nil || !bytes.Equal(got.KEMPublic, key) {
			t.Fatalf("stored key %q, %v", got.KEMPublic, err)
		}

		// CreateDevice stores a key given at enrollment.
		withKey, err := s.CreateDevice(ctx, "acme", Device{FleetID: fx.fleet.ID, TPMKind: TPMNone, KEMPublic: another})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetDevice(ctx, "acme", withKey.ID); err != nil || !bytes.Equal(got.KEMPublic, another) {
			t.Fatalf("key stored at creation %q, %v", got.KEMPublic, err)
		}
		_, _, err = s.SetDeviceKEMPublic(ctx, "acme", withKey.ID, key)
		wantErr(t, "device enrolled with a key", err, ErrConflict)
	})
}
