package tgsp

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
)

// Key files are PEM with a type per kind, so a signer key can never be read
// where a recipient key is expected (and the reverse). The PEM body starts
// with an algorithm byte (keyAlgV1) so that a later format version can add
// algorithms without guessing from lengths. See SPEC.md §6.
const (
	pemSignerPrivate    = "TGSP SIGNER PRIVATE KEY"
	pemSignerPublic     = "TGSP SIGNER PUBLIC KEY"
	pemRecipientPrivate = "TGSP RECIPIENT PRIVATE KEY"
	pemRecipientPublic  = "TGSP RECIPIENT PUBLIC KEY"
	pemHeaderKeyID      = "Key-Id"

	keyAlgV1 = 0x01

	signerPrivSize    = 1 + mldsa65.SeedSize + ed25519.SeedSize
	signerPubSize     = 1 + mldsa65.PublicKeySize + ed25519.PublicKeySize
	recipientPrivSize = 1 + 32   // X-Wing seed
	recipientPubSize  = 1 + 1216 // X-Wing encapsulation key

	// maxKeyFileSize bounds what is read from disk before parsing.
	maxKeyFileSize = 16 << 10
)

// xwing is the HPKE KEM used to wrap DEKs: ML-KEM-768 + X25519 (X-Wing).
var xwing = hpke.MLKEM768X25519()

// KeyKind names what a key file holds.
type KeyKind string

// The kinds accepted by `tgsp keygen --kind`.
const (
	KindSigner    KeyKind = "signer"
	KindRecipient KeyKind = "recipient"
)

// SignerPrivateKey signs packages: an ML-DSA-65 key and an Ed25519 key, both
// derived from 32-byte seeds.
type SignerPrivateKey struct {
	pqSeed [mldsa65.SeedSize]byte
	pq     *mldsa65.PrivateKey
	ed     ed25519.PrivateKey
	pub    *SignerPublicKey
}

// SignerPublicKey verifies package signatures.
type SignerPublicKey struct {
	pq  *mldsa65.PublicKey
	ed  ed25519.PublicKey
	raw []byte // serialized body, algorithm byte first
}

// RecipientPrivateKey unwraps package DEKs.
type RecipientPrivateKey struct {
	seed []byte
	k    hpke.PrivateKey
	pub  *RecipientPublicKey
}

// RecipientPublicKey is what a package is encrypted to.
type RecipientPublicKey struct {
	k   hpke.PublicKey
	raw []byte
}

// GenerateSigner creates a new signer key from rnd (crypto/rand if nil).
func GenerateSigner(rnd io.Reader) (*SignerPrivateKey, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	var body [signerPrivSize]byte
	body[0] = keyAlgV1
	if _, err := io.ReadFull(rnd, body[1:]); err != nil {
		return nil, fmt.Errorf("generate signer key: %w", err)
	}
	return parseSignerPrivate(body[:])
}

// GenerateRecipient creates a new recipient key from rnd (crypto/rand if nil).
func GenerateRecipient(rnd io.Reader) (*RecipientPrivateKey, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	var body [recipientPrivSize]byte
	body[0] = keyAlgV1
	if _, err := io.ReadFull(rnd, body[1:]); err != nil {
		return nil, fmt.Errorf("generate recipient key: %w", err)
	}
	return parseRecipientPrivate(body[:])
}

func parseSignerPrivate(body []byte) (*SignerPrivateKey, error) {
	if len(body) != signerPrivSize || body[0] != keyAlgV1 {
		return nil, fmt.Errorf("%w: signer private key body has %d bytes or unknown algorithm", ErrKey, len(body))
	}
	k := &SignerPrivateKey{}
	copy(k.pqSeed[:], body[1:1+mldsa65.SeedSize])
	pqPub, pqPriv := mldsa65.NewKeyFromSeed(&k.pqSeed)
	k.pq = pqPriv
	k.ed = ed25519.NewKeyFromSeed(body[1+mldsa65.SeedSize:])
	raw := make([]byte, 0, signerPubSize)
	raw = append(raw, keyAlgV1)
	raw = append(raw, pqPub.Bytes()...)
	raw = append(raw, k.ed.Public().(ed25519.PublicKey)...)
	pub, err := parseSignerPublic(raw)
	if err != nil {
		return nil, err
	}
	k.pub = pub
	return k, nil
}

func parseSignerPublic(body []byte) (*SignerPublicKey, error) {
	if len(body) != signerPubSize || body[0] != keyAlgV1 {
		return nil, fmt.Errorf("%w: signer public key body has %d bytes or unknown algorithm", ErrKey, len(body))
	}
	pq := new(mldsa65.PublicKey)
	if err := pq.UnmarshalBinary(body[1 : 1+mldsa65.PublicKeySize]); err != nil {
		return nil, fmt.Errorf("%w: ml-dsa-65 public key: %v", ErrKey, err)
	}
	ed := ed25519.PublicKey(bytes.Clone(body[1+mldsa65.PublicKeySize:]))
	return &SignerPublicKey{pq: pq, ed: ed, raw: bytes.Clone(body)}, nil
}

func parseRecipientPrivate(body []byte) (*RecipientPrivateKey, error) {
	if len(body) != recipientPrivSize || body[0] != keyAlgV1 {
		return nil, fmt.Errorf("%w: recipient private key body has %d bytes or unknown algorithm", ErrKey, len(body))
	}
	seed := bytes.Clone(body[1:])
	k, err := xwing.NewPrivateKey(seed)
	if err != nil {
		return nil, fmt.Errorf("%w: x-wing private key: %v", ErrKey, err)
	}
	pubRaw := append([]byte{keyAlgV1}, k.PublicKey().Bytes()...)
	pub, err := parseRecipientPublic(pubRaw)
	if err != nil {
		return nil, err
	}
	return &RecipientPrivateKey{seed: seed, k: k, pub: pub}, nil
}

func parseRecipientPublic(body []byte) (*RecipientPublicKey, error) {
	if len(body) != recipientPubSize || body[0] != keyAlgV1 {
		return nil, fmt.Errorf("%w: recipient public key body has %d bytes or unknown algorithm", ErrKey, len(body))
	}
	k, err := xwing.NewPublicKey(body[1:])
	if err != nil {
		return nil, fmt.Errorf("%w: x-wing public key: %v", ErrKey, err)
	}
	return &RecipientPublicKey{k: k, raw: bytes.Clone(body)}, nil
}

// Public returns the verification key.
func (k *SignerPrivateKey) Public() *SignerPublicKey { return k.pub }

// Public returns the encryption key.
func (k *RecipientPrivateKey) Public() *RecipientPublicKey { return k.pub }

// KeyID identifies a signer public key: the first 16 bytes of
// SHA-256("tgsp signer key id v1" || body), hex encoded.
func (k *SignerPublicKey) KeyID() string { return keyID("tgsp signer key id v1", k.raw) }

// KeyID identifies a recipient public key (see SPEC.md §6).
func (k *RecipientPublicKey) KeyID() string { return keyID("tgsp recipient key id v1", k.raw) }

func (k *RecipientPublicKey) keyIDBytes() [keyIDSize]byte {
	var id [keyIDSize]byte
	h := sha256.Sum256(append([]byte("tgsp recipient key id v1"), k.raw...))
	copy(id[:], h[:keyIDSize])
	return id
}

const keyIDSize = 16

func keyID(label string, raw []byte) string {
	h := sha256.Sum256(append([]byte(label), raw...))
	return hex.EncodeToString(h[:keyIDSize])
}

// Equal reports whether two signer public keys are the same key.
func (k *SignerPublicKey) Equal(o *SignerPublicKey) bool {
	return o != nil && bytes.Equal(k.raw, o.raw)
}

// MarshalPEM encodes the key as a key file.
func (k *SignerPrivateKey) MarshalPEM() []byte {
	body := make([]byte, 0, signerPrivSize)
	body = append(body, keyAlgV1)
	body = append(body, k.pqSeed[:]...)
	body = append(body, k.ed.Seed()...)
	return encodePEM(pemSignerPrivate, k.pub.KeyID(), body)
}

// MarshalPEM encodes the key as a key file.
func (k *SignerPublicKey) MarshalPEM() []byte { return encodePEM(pemSignerPublic, k.KeyID(), k.raw) }

// MarshalPEM encodes the key as a key file.
func (k *RecipientPrivateKey) MarshalPEM() []byte {
	return encodePEM(pemRecipientPrivate, k.pub.KeyID(), append([]byte{keyAlgV1}, k.seed...))
}

// MarshalPEM encodes the key as a key file.
func (k *RecipientPublicKey) MarshalPEM() []byte {
	return encodePEM(pemRecipientPublic, k.KeyID(), k.raw)
}

// Bytes returns the public key body (algorithm byte first), the form the
// control plane stores for a device.
func (k *RecipientPublicKey) Bytes() []byte { return bytes.Clone(k.raw) }

// ParseRecipientPublicKeyBytes parses the output of RecipientPublicKey.Bytes.
func ParseRecipientPublicKeyBytes(b []byte) (*RecipientPublicKey, error) {
	return parseRecipientPublic(b)
}

// Bytes returns the public key body (algorithm byte first), the form a
// control plane stores for a pinned publisher.
func (k *SignerPublicKey) Bytes() []byte { return bytes.Clone(k.raw) }

// ParseSignerPublicKeyBytes parses the output of SignerPublicKey.Bytes.
func ParseSignerPublicKeyBytes(b []byte) (*SignerPublicKey, error) {
	return parseSignerPublic(b)
}

func encodePEM(typ, id string, body []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Headers: map[string]string{pemHeaderKeyID: id}, Bytes: body})
}

// decodePEM parses exactly one PEM block of type want, with nothing but
// whitespace around it and no headers other than Key-Id.
func decodePEM(data []byte, want string) (block *pem.Block, err error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%w: not a PEM key file", ErrKey)
	}
	if block.Type != want {
		return nil, fmt.Errorf("%w: file holds a %q, want a %q", ErrKey, block.Type, want)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: trailing data after the key", ErrKey)
	}
	// pem.Decode skips whatever precedes the first well-formed block, even
	// another, broken block; only whitespace may.
	if !bytes.HasPrefix(bytes.TrimSpace(data), []byte("-----BEGIN ")) || bytes.Count(data, []byte("-----BEGIN")) != 1 {
		return nil, fmt.Errorf("%w: data before the key", ErrKey)
	}
	for h := range block.Headers {
		if h != pemHeaderKeyID {
			return nil, fmt.Errorf("%w: unknown header %q", ErrKey, h)
		}
	}
	return block, nil
}

// checkKeyID rejects a Key-Id header that does not match the key.
func checkKeyID(block *pem.Block, id string) error {
	if got, ok := block.Headers[pemHeaderKeyID]; ok && got != id {
		return fmt.Errorf("%w: Key-Id header %s does not match the key (%s)", ErrKey, got, id)
	}
	return nil
}

// ParseSignerPrivateKey parses a signer private key file.
func ParseSignerPrivateKey(data []byte) (*SignerPrivateKey, error) {
	block, err := decodePEM(data, pemSignerPrivate)
	if err != nil {
		return nil, err
	}
	k, err := parseSignerPrivate(block.Bytes)
	if err != nil {
		return nil, err
	}
	return k, checkKeyID(block, k.pub.KeyID())
}

// ParseSignerPublicKey parses a signer public key file.
func ParseSignerPublicKey(data []byte) (*SignerPublicKey, error) {
	block, err := decodePEM(data, pemSignerPublic)
	if err != nil {
		return nil, err
	}
	k, err := parseSignerPublic(block.Bytes)
	if err != nil {
		return nil, err
	}
	return k, checkKeyID(block, k.KeyID())
}

// ParseRecipientPrivateKey parses a recipient private key file.
func ParseRecipientPrivateKey(data []byte) (*RecipientPrivateKey, error) {
	block, err := decodePEM(data, pemRecipientPrivate)
	if err != nil {
		return nil, err
	}
	k, err := parseRecipientPrivate(block.Bytes)
	if err != nil {
		return nil, err
	}
	return k, checkKeyID(block, k.pub.KeyID())
}

// ParseRecipientPublicKey parses a recipient public key file.
func ParseRecipientPublicKey(data []byte) (*RecipientPublicKey, error) {
	block, err := decodePEM(data, pemRecipientPublic)
	if err != nil {
		return nil, err
	}
	k, err := parseRecipientPublic(block.Bytes)
	if err != nil {
		return nil, err
	}
	return k, checkKeyID(block, k.KeyID())
}

// readKeyFile reads a key file; for private keys it refuses files that
// anyone but the owner can read or write.
func readKeyFile(path string, private bool) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrKey, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrKey, path)
	}
	if private && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: private key %s is accessible by others (mode %04o); run chmod 600 %s",
			ErrKey, path, fi.Mode().Perm(), path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read %s: %v", ErrKey, path, err)
	}
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("%w: %s is larger than any key file", ErrKey, path)
	}
	return data, nil
}

func loadKey[K any](path string, private bool, parse func([]byte) (K, error)) (K, error) {
	var zero K
	data, err := readKeyFile(path, private)
	if err != nil {
		return zero, err
	}
	k, err := parse(data)
	if err != nil {
		return zero, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// LoadSignerPrivateKey reads a signer private key file (mode 0600 or stricter).
func LoadSignerPrivateKey(path string) (*SignerPrivateKey, error) {
	return loadKey(path, true, ParseSignerPrivateKey)
}

// LoadSignerPublicKey reads a signer public key file.
func LoadSignerPublicKey(path string) (*SignerPublicKey, error) {
	return loadKey(path, false, ParseSignerPublicKey)
}

// LoadRecipientPrivateKey reads a recipient private key file (mode 0600 or stricter).
func LoadRecipientPrivateKey(path string) (*RecipientPrivateKey, error) {
	return loadKey(path, true, ParseRecipientPrivateKey)
}

// LoadRecipientPublicKey reads a recipient public key file.
func LoadRecipientPublicKey(path string) (*RecipientPublicKey, error) {
	return loadKey(path, false, ParseRecipientPublicKey)
}

// WriteKeyPair generates a key of the given kind and writes PREFIX.key
// (mode 0600) and PREFIX.pub (mode 0644). Existing files are never
// overwritten. It returns the public key's id.
func WriteKeyPair(prefix string, kind KeyKind, rnd io.Reader) (string, error) {
	var priv, pub []byte
	var id string
	switch kind {
	case KindSigner:
		k, err := GenerateSigner(rnd)
		if err != nil {
			return "", err
		}
		priv, pub, id = k.MarshalPEM(), k.pub.MarshalPEM(), k.pub.KeyID()
	case KindRecipient:
		k, err := GenerateRecipient(rnd)
		if err != nil {
			return "", err
		}
		priv, pub, id = k.MarshalPEM(), k.pub.MarshalPEM(), k.pub.KeyID()
	default:
		return "", fmt.Errorf("%w: unknown key kind %q (want signer or recipient)", ErrKey, kind)
	}
	if err := writeNew(prefix+".key", priv, 0o600); err != nil {
		return "", err
	}
	if err := writeNew(prefix+".pub", pub, 0o644); err != nil {
		os.Remove(prefix + ".key")
		return "", err
	}
	return id, nil
}

// writeNew creates path exclusively with perm and writes data durably.
func writeNew(path string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists; refusing to overwrite a key", path)
		}
		return err
	}
	// The umask may have narrowed perm; a private key must be exactly 0600.
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
