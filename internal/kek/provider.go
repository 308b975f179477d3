package kek

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// Provider holds a key-encryption key (KEK) and wraps data keys under it.
// The KEK itself never leaves the provider: today it is a local key from an
// env var or a file (LocalProvider); a Vault Transit or KMS provider
// implements the same four methods without the key ever entering this
// process.
//
// Implementations must bind aad to the wrapped key, so unwrapping with a
// different aad fails with ErrUnwrap, and must be safe for concurrent use.
type Provider interface {
	// ID names the KEK (not the provider's source): the same key read from a
	// file or an env var has the same ID. It is not secret; stores record it
	// next to each wrapped key so rotation knows what to rewrap.
	ID() string
	// WrapKey encrypts and authenticates plaintextKey, bound to aad.
	WrapKey(ctx context.Context, plaintextKey, aad []byte) ([]byte, error)
	// UnwrapKey reverses WrapKey; it fails with ErrWrongKEK, ErrUnwrap,
	// ErrMalformed or ErrUnsupportedVersion and never returns a wrong key.
	UnwrapKey(ctx context.Context, wrapped, aad []byte) ([]byte, error)
	// ProductionReady returns nil if the provider may hold the KEK of a
	// production deployment, and an error wrapping ErrInsecure that says
	// why not otherwise. A server started with TG_ENVIRONMENT=production
	// refuses to start when it is non-nil.
	ProductionReady() error
}

var _ Provider = (*LocalProvider)(nil)

// KeySize is the size of a KEK and of a tenant DEK: AES-256.
const KeySize = 32

const (
	// wrapFormatV1 is the first byte of a key wrapped by a LocalProvider:
	// 0x01 || KEK id (8) || AES-KWP(HKDF-SHA256(KEK, info), key).
	wrapFormatV1 = 0x01
	kekIDSize    = 8
	// wrapInfoPrefix starts the HKDF info; the caller's aad follows it. The
	// prefix is fixed, so info determines aad unambiguously.
	wrapInfoPrefix = "tensorguardflow kek wrap v1\x00"
	kekIDLabel     = "tensorguardflow kek id v1\x00"

	// devKeyPrefix marks key text written by GenerateKeyFile. It travels
	// with the key when someone copies it into an env var, so a
	// development key is recognised wherever it turns up.
	devKeyPrefix = "tg-dev-kek:"

	minWrapKey = 16
	maxWrapKey = 1024
	// maxKeyFileSize bounds what is read from disk before parsing.
	maxKeyFileSize = 4 << 10
)

// Config says where the KEK comes from: exactly one of Env and File. It is
// the key-provider section of a component's configuration file; secrets
// themselves never appear in configuration.
type Config struct {
	// Env names an environment variable holding the KEK as 32 bytes in hex
	// or base64, e.g. TG_KEY_MASTER.
	Env string `json:"env,omitempty" yaml:"env,omitempty"`
	// File is the path of a key file holding the KEK in the same encoding
	// (mode 0600 or 0400), e.g. a systemd credential.
	File string `json:"file,omitempty" yaml:"file,omitempty"`
}

// Validate checks the configuration without reading any key.
func (c Config) Validate() error {
	switch {
	case c.Env == "" && c.File == "":
		return fmt.Errorf("%w: kek config names neither an env var nor a key file", ErrBadKey)
	case c.Env != "" && c.File != "":
		return fmt.Errorf("%w: kek config names both env var %s and key file %s; choose one", ErrBadKey, c.Env, c.File)
	case c.Env != "" && strings.ContainsAny(c.Env, "= \t\n\x00"):
		return fmt.Errorf("%w: kek env var name %q is not a valid variable name", ErrBadKey, c.Env)
	}
	return nil
}

// Open loads the provider the configuration names.
func Open(c Config) (Provider, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.Env != "" {
		return FromEnv(c.Env)
	}
	return FromFile(c.File)
}

// LocalProvider holds the KEK in process memory. Its zero value is not
// usable; get one from FromEnv, FromFile or NewMemoryProvider.
type LocalProvider struct {
	// kek is behind a pointer so that fmt, which cannot call methods on
	// unexported fields, prints an address rather than key bytes when a
	// LocalProvider value is dumped with %v or %#v.
	kek    *[KeySize]byte
	id     [kekIDSize]byte
	source string // "env TG_KEY_MASTER", "file /path", "memory"
	// insecure is why the key must not be used in production ("" if it
	// may be).
	insecure string
}

// FromEnv reads the KEK from the environment variable name. The key is
// production-ready unless it carries the development marker of
// GenerateKeyFile.
func FromEnv(name string) (*LocalProvider, error) {
	if err := (Config{Env: name}).Validate(); err != nil {
		return nil, err
	}
	v, ok := os.LookupEnv(name)
	if !ok {
		return nil, fmt.Errorf("%w: %s is not set", ErrBadKey, name)
	}
	key, dev, err := parseKeyText(name, v)
	if err != nil {
		return nil, err
	}
	p := newLocal(key, "env "+name)
	if dev {
		p.insecure = fmt.Sprintf("env %s holds a development key written by GenerateKeyFile", name)
	}
	return p, nil
}

// FromFile reads the KEK from a key file, which must be a regular file that
// neither group nor others can access (mode 0600 or 0400). A key file
// written by GenerateKeyFile is for development only; any other key file
// (for example a systemd credential under $CREDENTIALS_DIRECTORY) is
// production-ready. A missing file yields an error wrapping fs.ErrNotExist,
// so a development first run can call GenerateKeyFile and retry.
func FromFile(path string) (*LocalProvider, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open kek file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat kek file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: kek file %s is not a regular file", ErrBadKey, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%w: kek file %s is accessible by group or others (mode %04o); run chmod 600 %s",
			ErrBadKey, path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read kek file: %w", err)
	}
	defer clear(data)
	if len(data) > maxKeyFileSize {
		return nil, fmt.Errorf("%w: kek file %s is larger than any key file", ErrBadKey, path)
	}
	key, dev, err := parseKeyText("kek file "+path, string(data))
	if err != nil {
		return nil, err
	}
	p := newLocal(key, "file "+path)
	if dev {
		p.insecure = fmt.Sprintf("kek file %s is a development key written by GenerateKeyFile", path)
	}
	return p, nil
}

// NewMemoryProvider wraps a KeySize-byte key held by the caller. It is for
// tests and tools; it is never production-ready, because nothing is known
// about where the key came from.
func NewMemoryProvider(key []byte) (*LocalProvider, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("%w: kek must be %d bytes, got %d", ErrBadKey, KeySize, len(key))
	}
	var k [KeySize]byte
	copy(k[:], key)
	p := newLocal(k, "memory")
	p.insecure = "in-memory key from NewMemoryProvider"
	return p, nil
}

func newLocal(key [KeySize]byte, source string) *LocalProvider {
	p := &LocalProvider{kek: &key, source: source}
	h := sha256.Sum256(append([]byte(kekIDLabel), key[:]...))
	copy(p.id[:], h[:kekIDSize])
	return p
}

// GenerateKeyFile writes a new random KEK to path (mode 0600), marked as a
// development key, for a first run without a configured secret. It never
// overwrites an existing file (the error wraps fs.ErrExist): losing a KEK
// loses every tenant's data.
func GenerateKeyFile(path string) error {
	var key [KeySize]byte
	if _, err := rand.Read(key[:]); err != nil {
		return fmt.Errorf("generate kek: %w", err)
	}
	text := "# TensorGuardFlow development KEK, written by GenerateKeyFile.\n" +
		"# Refused with TG_ENVIRONMENT=production: supply the KEK from a secret store there.\n" +
		"# Losing this file makes all tenant data unreadable; back it up.\n" +
		devKeyPrefix + hex.EncodeToString(key[:]) + "\n"
	clear(key[:])
	data := []byte(text)
	defer clear(data)
	return writeNew(path, data, 0o600)
}

// writeNew creates path exclusively with perm and writes data durably.
func writeNew(path string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("write kek file: %s exists; refusing to overwrite a key: %w", path, fs.ErrExist)
		}
		return fmt.Errorf("write kek file: %w", err)
	}
	// The umask may have narrowed perm, never widened it; set it exactly.
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write kek file %s: %w", path, err)
	}
	// Make the new directory entry durable too; failure here only weakens
	// crash safety, so it is not reported.
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// parseKeyText decodes key text from an env var or a key file: blank lines
// and lines starting with '#' are ignored; exactly one line remains, an
// optional development marker followed by 32 bytes in hex or base64
// (standard or URL alphabet, padded or not). what names the source in
// errors; the key text itself never appears in an error.
func parseKeyText(what, text string) (key [KeySize]byte, dev bool, err error) {
	var lines []string
	for line := range strings.Lines(text) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		lines = append(lines, line)
	}
	switch len(lines) {
	case 0:
		return key, false, fmt.Errorf("%w: %s is empty; it must hold 32 bytes, hex or base64", ErrBadKey, what)
	case 1:
	default:
		return key, false, fmt.Errorf("%w: %s must hold one key, 32 bytes, hex or base64; got %d lines", ErrBadKey, what, len(lines))
	}
	s := lines[0]
	if rest, ok := strings.CutPrefix(s, devKeyPrefix); ok {
		s, dev = rest, true
	}
	raw, desc := decodeKey(s)
	defer clear(raw)
	if raw == nil {
		return key, false, fmt.Errorf("%w: %s must be 32 bytes, hex or base64; got %s", ErrBadKey, what, desc)
	}
	if len(raw) != KeySize {
		return key, false, fmt.Errorf("%w: %s must be 32 bytes, hex or base64; got %d", ErrBadKey, what, len(raw))
	}
	copy(key[:], raw)
	return key, dev, nil
}

// decodeKey decodes hex (when every character is a hex digit) or else
// base64. On failure it returns nil and a description that reveals nothing
// of the value but its length.
func decodeKey(s string) ([]byte, string) {
	if strings.Trim(s, "0123456789abcdefABCDEF") == "" {
		if len(s)%2 != 0 {
			return nil, fmt.Sprintf("%d hex digits", len(s))
		}
		b, _ := hex.DecodeString(s) // cannot fail: even length, hex digits only
		return b, ""
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, ""
		}
	}
	return nil, fmt.Sprintf("%d characters that are neither hex nor base64", len(s))
}

// ID returns "local:" and 16 hex digits of SHA-256 over a label and the
// key. It identifies the key, not where it was read from.
func (p *LocalProvider) ID() string { return "local:" + hex.EncodeToString(p.id[:]) }

// Source says where the key was read from ("env TG_KEY_MASTER", "file
// /etc/…", "memory"), for logs and error messages.
func (p *LocalProvider) Source() string { return p.source }

// ProductionReady implements Provider.
func (p *LocalProvider) ProductionReady() error {
	if p.insecure != "" {
		return fmt.Errorf("%w: %s", ErrInsecure, p.insecure)
	}
	return nil
}

// String describes the provider without the key.
func (p *LocalProvider) String() string {
	s := p.ID() + " from " + p.source
	if p.insecure != "" {
		s += " (development)"
	}
	return s
}

// GoString keeps %#v from printing the key.
func (p *LocalProvider) GoString() string { return "kek.LocalProvider(" + p.String() + ")" }

// LogValue makes slog print the description, never the key.
func (p *LocalProvider) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("id", p.ID()),
		slog.String("source", p.source),
		slog.Bool("production_ready", p.insecure == ""),
	)
}

// wrappingCipher derives the AES-256 key that wraps keys for one aad:
// HKDF-SHA256(secret = KEK, salt = none, info = prefix || aad). KWP has no
// associated data of its own; deriving a key per aad binds it instead, so a
// key wrapped for one tenant (or key version) fails the KWP integrity
// check under any other.
func (p *LocalProvider) wrappingCipher(aad []byte) (cipher.Block, error) {
	k, err := hkdf.Key(sha256.New, p.kek[:], nil, wrapInfoPrefix+string(aad), KeySize)
	if err != nil {
		return nil, fmt.Errorf("derive wrapping key: %w", err)
	}
	defer clear(k)
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("derive wrapping key: %w", err)
	}
	return b, nil
}

// WrapKey implements Provider: the result is
// 0x01 || KEK id (8 bytes) || AES-KWP(HKDF-SHA256(KEK, info = prefix||aad), key).
func (p *LocalProvider) WrapKey(_ context.Context, plaintextKey, aad []byte) ([]byte, error) {
	if len(plaintextKey) < minWrapKey || len(plaintextKey) > maxWrapKey {
		return nil, invalid("key to wrap must be %d to %d bytes, got %d", minWrapKey, maxWrapKey, len(plaintextKey))
	}
	b, err := p.wrappingCipher(aad)
	if err != nil {
		return nil, err
	}
	w, err := wrapKWP(b, plaintextKey)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, 1+kekIDSize+len(w))
	out = append(out, wrapFormatV1)
	out = append(out, p.id[:]...)
	return append(out, w...), nil
}

// UnwrapKey implements Provider.
func (p *LocalProvider) UnwrapKey(_ context.Context, wrapped, aad []byte) ([]byte, error) {
	if len(wrapped) == 0 {
		return nil, malformed("wrapped key is empty")
	}
	if wrapped[0] != wrapFormatV1 {
		return nil, fmt.Errorf("%w: wrapped key format %d", ErrUnsupportedVersion, wrapped[0])
	}
	if len(wrapped) < 1+kekIDSize+2*semiblock {
		return nil, malformed("wrapped key has %d bytes", len(wrapped))
	}
	if id := wrapped[1 : 1+kekIDSize]; !bytes.Equal(id, p.id[:]) {
		return nil, fmt.Errorf("%w: key was wrapped by local:%x, this provider holds %s", ErrWrongKEK, id, p.ID())
	}
	b, err := p.wrappingCipher(aad)
	if err != nil {
		return nil, err
	}
	return unwrapKWP(b, wrapped[1+kekIDSize:])
}

// Rewrap moves a wrapped key from oldKEK to newKEK, for KEK rotation: pass
// every stored DEK through Rewrap (RewrapTenantKey for tenant DEKs), store
// the results, and only then retire oldKEK. The plaintext key exists only inside this call.
func Rewrap(ctx context.Context, oldKEK, newKEK Provider, wrapped, aad []byte) ([]byte, error) {
	key, err := oldKEK.UnwrapKey(ctx, wrapped, aad)
	if err != nil {
		return nil, fmt.Errorf("rewrap: unwrap with %s: %w", oldKEK.ID(), err)
	}
	defer clear(key)
	out, err := newKEK.WrapKey(ctx, key, aad)
	if err != nil {
		return nil, fmt.Errorf("rewrap: wrap with %s: %w", newKEK.ID(), err)
	}
	return out, nil
}
