package kek

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testKey is a fixed KEK; its encodings below are what an operator pastes.
var testKey = func() []byte {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = byte(0xC0 + i)
	}
	return k
}()

func TestParseKeyText(t *testing.T) {
	t.Parallel()
	hexKey := hex.EncodeToString(testKey)
	tests := []struct {
		name    string
		text    string
		dev     bool
		wantErr string // substring; "" means success
	}{
		{"hex", hexKey, false, ""},
		{"hex upper case", strings.ToUpper(hexKey), false, ""},
		{"hex with newline and spaces", "  " + hexKey + " \n", false, ""},
		{"base64 std", base64.StdEncoding.EncodeToString(testKey), false, ""},
		{"base64 raw std", base64.RawStdEncoding.EncodeToString(testKey), false, ""},
		{"base64 url", base64.URLEncoding.EncodeToString(testKey), false, ""},
		{"base64 raw url", base64.RawURLEncoding.EncodeToString(testKey), false, ""},
		{"comments and blank lines", "# a comment\n\n" + hexKey + "\n# trailer\n", false, ""},
		{"development marker", devKeyPrefix + hexKey, true, ""},
		{"31 bytes hex", hexKey[:62], false, "K must be 32 bytes, hex or base64; got 31"},
		{"33 bytes hex", hexKey + "00", false, "K must be 32 bytes, hex or base64; got 33"},
		{"31 bytes base64", base64.StdEncoding.EncodeToString(testKey[:31]), false, "K must be 32 bytes, hex or base64; got 31"},
		{"odd hex", hexKey[:63], false, "got 63 hex digits"},
		{"neither", "not a key at all!", false, "neither hex nor base64"},
		{"empty", "", false, "K is empty"},
		{"only comments", "# nothing\n", false, "K is empty"},
		{"two keys", hexKey + "\n" + hexKey, false, "got 2 lines"},
		{"marker without key", devKeyPrefix, false, "got 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			key, dev, err := parseKeyText("K", tc.text)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrBadKey containing %q", err, tc.wantErr)
				}
				if s := strings.TrimSpace(tc.text); len(s) >= 16 && strings.Contains(err.Error(), s) {
					t.Fatalf("error %q reveals the key text", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(key[:], testKey) || dev != tc.dev {
				t.Fatalf("key = %x dev = %v, want %x dev = %v", key, dev, testKey, tc.dev)
			}
		})
	}
}

func TestFromEnv(t *testing.T) {
	const name = "TG_KEY_MASTER"
	hexKey := hex.EncodeToString(testKey)
	tests := []struct {
		name      string
		value     *string
		wantErr   string
		wantReady bool
	}{
		{"hex", ptr(hexKey), "", true},
		{"base64", ptr(base64.StdEncoding.EncodeToString(testKey)), "", true},
		{"development key pasted into env", ptr(devKeyPrefix + hexKey), "", false},
		{"unset", nil, "TG_KEY_MASTER is not set", false},
		{"empty", ptr(""), "TG_KEY_MASTER is empty", false},
		{"31 bytes", ptr(hexKey[:62]), "TG_KEY_MASTER must be 32 bytes, hex or base64; got 31", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(name, "")
			if tc.value == nil {
				os.Unsetenv(name)
			} else {
				os.Setenv(name, *tc.value)
			}
			p, err := FromEnv(name)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrBadKey containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkReady(t, p, tc.wantReady)
			if p.Source() != "env "+name {
				t.Errorf("Source() = %q", p.Source())
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func checkReady(t *testing.T, p Provider, want bool) {
	t.Helper()
	err := p.ProductionReady()
	if want && err != nil {
		t.Fatalf("ProductionReady() = %v, want nil", err)
	}
	if !want && !errors.Is(err, ErrInsecure) {
		t.Fatalf("ProductionReady() = %v, want ErrInsecure", err)
	}
}

func writeFile(t *testing.T, dir, name, content string, perm fs.FileMode) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // defeat the umask
		t.Fatal(err)
	}
	return path
}

func TestFromFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	hexKey := hex.EncodeToString(testKey) + "\n"
	tests := []struct {
		name    string
		path    func() string
		wantErr string
		wantIs  error
	}{
		{"0600", func() string { return writeFile(t, dir, "a", hexKey, 0o600) }, "", nil},
		{"0400", func() string { return writeFile(t, dir, "b", hexKey, 0o400) }, "", nil},
		{"0644", func() string { return writeFile(t, dir, "c", hexKey, 0o644) }, "(mode 0644); run chmod 600", ErrBadKey},
		{"0640", func() string { return writeFile(t, dir, "d", hexKey, 0o640) }, "accessible by group or others", ErrBadKey},
		{"0602", func() string { return writeFile(t, dir, "e", hexKey, 0o602) }, "run chmod 600", ErrBadKey},
		{"directory", func() string { p := filepath.Join(dir, "dir"); os.Mkdir(p, 0o700); return p }, "not a regular file", ErrBadKey},
		{"missing", func() string { return filepath.Join(dir, "missing") }, "open kek file", fs.ErrNotExist},
		{"too big", func() string {
			return writeFile(t, dir, "f", strings.Repeat("# padding\n", maxKeyFileSize/10+1)+hexKey, 0o600)
		}, "larger than any key file", ErrBadKey},
		{"31 bytes", func() string { return writeFile(t, dir, "g", hexKey[:62], 0o600) }, "must be 32 bytes, hex or base64; got 31", ErrBadKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path()
			p, err := FromFile(path)
			if tc.wantIs != nil {
				if !errors.Is(err, tc.wantIs) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %v containing %q", err, tc.wantIs, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkReady(t, p, true) // an operator's key file
			if p.Source() != "file "+path {
				t.Errorf("Source() = %q", p.Source())
			}
		})
	}
}

func TestGenerateKeyFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "kek")
	if err := GenerateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode = %04o, want 0600", fi.Mode().Perm())
	}
	before, _ := os.ReadFile(path)

	p, err := FromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	checkReady(t, p, false)
	if err := p.ProductionReady(); !strings.Contains(err.Error(), path) {
		t.Errorf("ProductionReady() = %v, want it to name %s", err, path)
	}

	// Never overwrite: the existing key must survive.
	err = GenerateKeyFile(path)
	if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second GenerateKeyFile = %v, want fs.ErrExist", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("GenerateKeyFile changed an existing key file")
	}

	// Two generated keys differ.
	path2 := filepath.Join(dir, "kek2")
	if err := GenerateKeyFile(path2); err != nil {
		t.Fatal(err)
	}
	p2, err := FromFile(path2)
	if err != nil {
		t.Fatal(err)
	}
	if p.ID() == p2.ID() {
		t.Fatal("two generated keys have the same id")
	}

	if err := GenerateKeyFile(filepath.Join(dir, "no", "such", "dir")); err == nil {
		t.Fatal("GenerateKeyFile into a missing directory succeeded")
	}
}

// A development key keeps its marker when copied into an env var, and the
// same key has the same ID wherever it is read from.
func TestGeneratedKeyInEnvIsStillDevelopment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kek")
	if err := GenerateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("TG_TEST_KEK", string(data))
	fromEnv, err := FromEnv("TG_TEST_KEK")
	if err != nil {
		t.Fatal(err)
	}
	checkReady(t, fromEnv, false)
	fromFile, err := FromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if fromEnv.ID() != fromFile.ID() {
		t.Fatalf("same key, different ids: %s vs %s", fromEnv.ID(), fromFile.ID())
	}
}

func TestConfigOpen(t *testing.T) {
	path := writeFile(t, t.TempDir(), "kek", base64.StdEncoding.EncodeToString(testKey), 0o600)
	t.Setenv("TG_TEST_KEK", hex.EncodeToString(testKey))
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"env", Config{Env: "TG_TEST_KEK"}, ""},
		{"file", Config{File: path}, ""},
		{"neither", Config{}, "neither an env var nor a key file"},
		{"both", Config{Env: "TG_TEST_KEK", File: path}, "choose one"},
		{"bad env name", Config{Env: "A=B"}, "not a valid variable name"},
	}
	var ids []string
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Open(tc.cfg)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrBadKey) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrBadKey containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, p.ID())
		})
	}
	if len(ids) != 2 || ids[0] != ids[1] {
		t.Fatalf("env and file with the same key gave ids %v", ids)
	}
}

func TestNewMemoryProvider(t *testing.T) {
	t.Parallel()
	if _, err := NewMemoryProvider(testKey[:31]); !errors.Is(err, ErrBadKey) {
		t.Fatalf("31-byte key: err = %v, want ErrBadKey", err)
	}
	p := memProvider(t, testKey)
	checkReady(t, p, false)
	if !strings.HasPrefix(p.ID(), "local:") || len(p.ID()) != len("local:")+16 {
		t.Fatalf("ID() = %q", p.ID())
	}
}

func memProvider(t testing.TB, key []byte) *LocalProvider {
	t.Helper()
	p, err := NewMemoryProvider(key)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProviderNeverPrintsKey(t *testing.T) {
	t.Parallel()
	p := memProvider(t, testKey)
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("kek", "provider", p, "value", *p)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("kek", "provider", p, "value", *p)
	out := fmt.Sprintf("%v %+v %#v %s %x %v %+v %#v", p, p, p, p, p, *p, *p, *p) + logs.String()
	for _, enc := range []string{
		hex.EncodeToString(testKey), strings.ToUpper(hex.EncodeToString(testKey)),
		base64.StdEncoding.EncodeToString(testKey), fmt.Sprint(testKey), string(testKey),
	} {
		if strings.Contains(out, enc) {
			t.Fatalf("key material printed: %s", out)
		}
	}
	if !strings.Contains(out, p.ID()) {
		t.Fatalf("description lacks the id: %s", out)
	}
}

func TestWrapUnwrap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	p := memProvider(t, testKey)
	other := memProvider(t, bytes.Repeat([]byte{1}, KeySize))
	dek := bytes.Repeat([]byte{0x5A}, KeySize)
	aad := []byte("tenant acme")
	w, err := p.WrapKey(ctx, dek, aad)
	if err != nil {
		t.Fatal(err)
	}
	if len(w) != 1+kekIDSize+KeySize+semiblock {
		t.Fatalf("wrapped DEK is %d bytes", len(w))
	}
	got, err := p.UnwrapKey(ctx, w, aad)
	if err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("UnwrapKey = %x, %v", got, err)
	}
	w2, _ := p.WrapKey(ctx, dek, aad)
	if !bytes.Equal(w, w2) {
		t.Fatal("KWP is deterministic; two wraps differ")
	}

	// A blob wrapped by another KEK but relabelled with p's id.
	forged, _ := other.WrapKey(ctx, dek, aad)
	copy(forged[1:], w[1:1+kekIDSize])

	tests := []struct {
		name    string
		p       Provider
		wrapped []byte
		aad     []byte
		want    error
	}{
		{"wrong aad", p, w, []byte("tenant acmf"), ErrUnwrap},
		{"nil aad", p, w, nil, ErrUnwrap},
		{"wrong KEK", other, w, aad, ErrWrongKEK},
		{"forged KEK id", p, forged, aad, ErrUnwrap},
		{"empty", p, nil, aad, ErrMalformed},
		{"version 2", p, append([]byte{2}, w[1:]...), aad, ErrUnsupportedVersion},
		{"truncated to the id", p, w[:1+kekIDSize], aad, ErrMalformed},
		{"truncated by one", p, w[:len(w)-1], aad, ErrMalformed},
		{"truncated by a semiblock", p, w[:len(w)-semiblock], aad, ErrUnwrap},
		{"trailing byte", p, append(bytes.Clone(w), 0), aad, ErrMalformed},
		{"trailing semiblock", p, append(bytes.Clone(w), make([]byte, semiblock)...), aad, ErrUnwrap},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.p.UnwrapKey(ctx, tc.wrapped, tc.aad)
			if !errors.Is(err, tc.want) || got != nil {
				t.Fatalf("UnwrapKey = %x, %v; want %v", got, err, tc.want)
			}
		})
	}

	// Every single-byte change is caught by the check that owns that byte.
	for i := range w {
		m := bytes.Clone(w)
		m[i] ^= 0x80
		_, err := p.UnwrapKey(ctx, m, aad)
		want := ErrUnwrap
		switch {
		case i == 0:
			want = ErrUnsupportedVersion
		case i <= kekIDSize:
			want = ErrWrongKEK
		}
		if !errors.Is(err, want) {
			t.Fatalf("byte %d changed: err = %v, want %v", i, err, want)
		}
	}

	for _, n := range []int{0, 15, maxWrapKey + 1} {
		if _, err := p.WrapKey(ctx, make([]byte, n), aad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("WrapKey of %d bytes: err = %v, want ErrInvalidArgument", n, err)
		}
	}
}

func TestRewrap(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	oldKEK := memProvider(t, testKey)
	newKEK := memProvider(t, bytes.Repeat([]byte{9}, KeySize))
	dek := bytes.Repeat([]byte{0x33}, KeySize)
	aad := []byte("aad")
	w, err := oldKEK.WrapKey(ctx, dek, aad)
	if err != nil {
		t.Fatal(err)
	}
	rw, err := Rewrap(ctx, oldKEK, newKEK, w, aad)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := newKEK.UnwrapKey(ctx, rw, aad); err != nil || !bytes.Equal(got, dek) {
		t.Fatalf("new KEK unwrap = %x, %v", got, err)
	}
	if _, err := oldKEK.UnwrapKey(ctx, rw, aad); !errors.Is(err, ErrWrongKEK) {
		t.Fatalf("old KEK on rewrapped key: err = %v, want ErrWrongKEK", err)
	}
	// Rewrapping twice (a rotation job restarted half way) fails safely.
	if _, err := Rewrap(ctx, oldKEK, newKEK, rw, aad); !errors.Is(err, ErrWrongKEK) || !strings.Contains(err.Error(), oldKEK.ID()) {
		t.Fatalf("rewrap of an already rewrapped key: err = %v, want ErrWrongKEK naming the old KEK", err)
	}
	if _, err := Rewrap(ctx, oldKEK, newKEK, w, []byte("other aad")); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("rewrap with wrong aad: err = %v, want ErrUnwrap", err)
	}
}
