package tpmdev_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmdevtest"
)

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSeal seals and unseals on each real TPM, and shows that a changed
// blob, a blob of another kind of object and data of the wrong size are
// refused.
func TestSeal(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			d, _, _ := b.open(t)
			for _, n := range []int{1, 33, tpmdev.MaxSealSize} {
				secret := randomBytes(t, n)
				blob, err := d.Seal(secret)
				if err != nil {
					t.Fatalf("seal %d bytes: %v", n, err)
				}
				if n >= 16 && (bytes.Contains(blob.Private, secret) || bytes.Contains(blob.Public, secret)) {
					t.Fatalf("sealed blob of %d bytes carries the secret in the clear", n)
				}
				got, err := d.Unseal(blob)
				if err != nil {
					t.Fatalf("unseal %d bytes: %v", n, err)
				}
				if !bytes.Equal(got, secret) {
					t.Fatalf("unsealed %x, want %x", got, secret)
				}
			}
			for _, n := range []int{0, tpmdev.MaxSealSize + 1} {
				if _, err := d.Seal(make([]byte, n)); err == nil {
					t.Errorf("sealed %d bytes", n)
				}
			}

			secret := randomBytes(t, 32)
			blob, err := d.Seal(secret)
			if err != nil {
				t.Fatal(err)
			}
			other, err := d.Seal(randomBytes(t, 32))
			if err != nil {
				t.Fatal(err)
			}
			pub := decodePublic(t, blob.Public)
			if pub.Type != tpm2.AlgKeyedHash || pub.Attributes&(tpm2.FlagFixedTPM|tpm2.FlagFixedParent) != tpm2.FlagFixedTPM|tpm2.FlagFixedParent ||
				pub.Attributes&(tpm2.FlagSign|tpm2.FlagDecrypt|tpm2.FlagSensitiveDataOrigin) != 0 {
				t.Fatalf("sealed object: type %v attributes %v", pub.Type, pub.Attributes)
			}
			flip := func(b []byte, i int) []byte {
				c := bytes.Clone(b)
				c[i] ^= 0x01
				return c
			}
			// A template the blob claims but Seal never makes: decrypt
			// allowed, so the "sealed" object would be a key.
			asKey := pub
			asKey.Attributes |= tpm2.FlagDecrypt
			asKeyPub, err := asKey.Encode()
			if err != nil {
				t.Fatal(err)
			}
			tampered := map[string]tpmdev.SealedBlob{
				"private area, first byte":    {Public: blob.Public, Private: flip(blob.Private, 2)},
				"private area, middle byte":   {Public: blob.Public, Private: flip(blob.Private, len(blob.Private)/2)},
				"private area, last byte":     {Public: blob.Public, Private: flip(blob.Private, len(blob.Private)-1)},
				"private area truncated":      {Public: blob.Public, Private: blob.Private[:len(blob.Private)-1]},
				"public area, unique field":   {Public: flip(blob.Public, len(blob.Public)-1), Private: blob.Private},
				"public area of another blob": {Public: other.Public, Private: blob.Private},
				"private area of another":     {Public: blob.Public, Private: other.Private},
				"attributes changed":          {Public: asKeyPub, Private: blob.Private},
				"public area garbage":         {Public: []byte{1, 2, 3}, Private: blob.Private},
			}
			for name, tb := range tampered {
				got, err := d.Unseal(tb)
				if err == nil {
					t.Errorf("%s: unsealed %x", name, got)
					continue
				}
				if !errors.Is(err, tpmdev.ErrSealedBlob) {
					t.Errorf("%s: %v, want ErrSealedBlob", name, err)
				}
			}
			// The genuine blob still unseals after all that.
			if got, err := d.Unseal(blob); err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("unseal after the refusals: %x, %v", got, err)
			}
		})
	}
}

// TestSealedBlobEncoding round-trips the on-disk form and refuses damaged
// encodings.
func TestSealedBlobEncoding(t *testing.T) {
	t.Parallel()
	blob := tpmdev.SealedBlob{Public: []byte("public area"), Private: []byte("private area")}
	enc, err := blob.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var got tpmdev.SealedBlob
	if err := got.UnmarshalBinary(enc); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Public, blob.Public) || !bytes.Equal(got.Private, blob.Private) {
		t.Fatalf("round trip: %q %q", got.Public, got.Private)
	}
	for name, b := range map[string][]byte{
		"empty":         nil,
		"magic only":    enc[:8],
		"truncated":     enc[:len(enc)-1],
		"trailing data": append(bytes.Clone(enc), 0),
		"other magic":   append([]byte("TGSEAL2\x00"), enc[8:]...),
	} {
		if err := new(tpmdev.SealedBlob).UnmarshalBinary(b); !errors.Is(err, tpmdev.ErrSealedBlob) {
			t.Errorf("%s: %v, want ErrSealedBlob", name, err)
		}
	}
	if _, err := (tpmdev.SealedBlob{Public: []byte("x")}).MarshalBinary(); err == nil {
		t.Error("marshalled a blob without private area")
	}
}

// TestSealAnotherTPM: a blob sealed by one TPM does not unseal on another
// (a simulator with other seeds), nor on the same simulator after its owner
// hierarchy is cleared; it does after a restart with the same seeds.
func TestSealAnotherTPM(t *testing.T) {
	open := func(seed int64) *tpmdev.Device {
		sim, err := simulator.GetWithFixedSeedInsecure(seed)
		if err != nil {
			t.Fatal(err)
		}
		return tpmdev.New(sim, tpmdev.KindSimulated)
	}
	d := open(1)
	secret := randomBytes(t, 32)
	blob, err := d.Seal(secret)
	if err != nil {
		t.Fatal(err)
	}
	_ = d.Close()

	d = open(1)
	if got, err := d.Unseal(blob); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("same seeds after a restart: %x, %v", got, err)
	}
	_ = d.Close()

	d = open(2)
	if got, err := d.Unseal(blob); !errors.Is(err, tpmdev.ErrSealedBlob) {
		t.Fatalf("another TPM: unsealed %x, %v; want ErrSealedBlob", got, err)
	}
	_ = d.Close()

	// TPM2_Clear replaces the owner hierarchy's seed: the storage key, and
	// with it everything sealed under it, is gone.
	sim, err := simulator.GetWithFixedSeedInsecure(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := tpm2.Clear(sim, tpm2.HandleLockout, tpm2.AuthCommand{Session: tpm2.HandlePasswordSession, Attributes: tpm2.AttrContinueSession}); err != nil {
		_ = sim.Close()
		t.Fatalf("tpm2_clear: %v", err)
	}
	d = tpmdev.New(sim, tpmdev.KindSimulated)
	defer d.Close()
	if got, err := d.Unseal(blob); !errors.Is(err, tpmdev.ErrSealedBlob) {
		t.Fatalf("after TPM2_Clear: unsealed %x, %v; want ErrSealedBlob", got, err)
	}
}

// TestSealSWTPMRestart: swtpm keeps its seeds in its state directory, so a
// blob sealed before a restart (a reboot of the device) unseals after it.
func TestSealSWTPMRestart(t *testing.T) {
	s := tpmdevtest.StartSWTPM(t)
	d := s.Open(t)
	secret := randomBytes(t, 33)
	blob, err := d.Seal(secret)
	if err != nil {
		t.Fatal(err)
	}
	_ = d.Close()
	s.Restart()
	d = s.Open(t)
	got, err := d.Unseal(blob)
	if err != nil {
		t.Fatalf("unseal after restart: %v", err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatalf("unsealed %x, want %x", got, secret)
	}
}

// TestSealMakesRoom: with the EK, the AK, the TLS key and as many more
// primary keys loaded as the TPM holds (the simulator holds three objects,
// swtpm a few more), Seal and Unseal still work, and the AK and the TLS key
// (flushed to make room) keep working as the same keys afterwards.
func TestSealMakesRoom(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			d, _, _ := b.open(t)
			ek, err := d.EK()
			if err != nil {
				t.Fatal(err)
			}
			defer ek.Close()
			ak, err := d.AK()
			if err != nil {
				t.Fatal(err)
			}
			defer ak.Close()
			tlsKey, err := d.TLSKey()
			if err != nil {
				t.Fatal(err)
			}
			defer tlsKey.Close()
			signer, err := tlsKey.Signer()
			if err != nil {
				t.Fatal(err)
			}
			// Take every remaining slot.
			var fillers []*tpmdev.Key
			for {
				k, err := d.CreatePrimary(tpmdev.StorageKeyTemplate())
				if err != nil {
					var w tpm2.Warning
					if !errors.As(err, &w) || w.Code != tpm2.RCObjectMemory {
						t.Fatalf("filling the TPM: %v", err)
					}
					break
				}
				fillers = append(fillers, k)
				if len(fillers) > 64 {
					t.Fatal("the TPM holds more than 67 objects: cannot fill it")
				}
			}
			t.Logf("%d more primary keys fill the TPM", len(fillers))
			defer func() {
				for _, k := range fillers {
					k.Close()
				}
			}()

			secret := randomBytes(t, 32)
			blob, err := d.Seal(secret)
			if err != nil {
				t.Fatalf("seal with all slots taken: %v", err)
			}
			if got, err := d.Unseal(blob); err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("unseal with all slots taken: %x, %v", got, err)
			}

			digest := sha256.Sum256([]byte("after eviction"))
			sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
			if err != nil {
				t.Fatalf("TLS key after eviction: %v", err)
			}
			if !ecdsa.VerifyASN1(tlsKey.Public().(*ecdsa.PublicKey), digest[:], sig) {
				t.Fatal("the re-created TLS key is another key")
			}
			q, err := d.Quote(ak, tpm2.AlgSHA256, []int{0}, []byte("nonce"))
			if err != nil {
				t.Fatalf("AK after eviction: %v", err)
			}
			verifyECDSA(t, ak.Public(), q.Attest, q.Signature)
			if _, err := d.CertifyKey(tlsKey, ak, []byte("qualifying data")); err != nil {
				t.Fatalf("certify after eviction: %v", err)
			}

			// A closed key is not brought back.
			tlsKey.Close()
			if _, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256); err == nil {
				t.Fatal("a closed key signed")
			}
		})
	}
}
