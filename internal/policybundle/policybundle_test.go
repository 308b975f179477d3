package policybundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const testPolicy = `package tensorguard.install

default allow := false

allow if {
	input.attestation.state == "trusted"
	input.dp_cert.epsilon <= data.limits.max_epsilon
}

reasons contains "device is not trusted" if input.attestation.state != "trusted"
`

func testFiles() Files {
	return Files{
		"install.rego":     []byte(testPolicy),
		"limits/data.json": []byte(`{"max_epsilon": 4}`),
	}
}

func mustBuild(t testing.TB, f Files) *Unsigned {
	t.Helper()
	u, err := Build(f)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func mustKey(t testing.TB) SigningKey {
	t.Helper()
	k, err := NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var testMeta = Meta{Tenant: "acme", Fleet: "flt-aaaaaaaaaaaaaaaaaaaa", Revision: 7, CreatedAt: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}

func mustSign(t testing.TB, u *Unsigned, m Meta, k SigningKey) []byte {
	t.Helper()
	raw, err := Sign(u, m, k)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	k := mustKey(t)
	u := mustBuild(t, testFiles())
	if got := u.Roots(); !slices.Equal(got, []string{"limits", "tensorguard"}) {
		t.Errorf("roots = %v", got)
	}
	raw := mustSign(t, u, testMeta, k)
	b, err := Verify(raw, k.Public())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if b.Revision != 7 || b.Tenant != "acme" || b.Fleet != testMeta.Fleet || !b.CreatedAt.Equal(testMeta.CreatedAt) ||
		b.KeyID != k.ID || b.SHA256 != Digest(raw) || !bytes.Equal(b.Raw, raw) {
		t.Errorf("verified bundle = %+v", b)
	}
	if got := b.Files(); !slices.Equal(got, []string{"install.rego", "data.json"}) {
		t.Errorf("files = %v", got)
	}
	// The signed bundle is a standard OPA bundle: the manifest and
	// signature files are where OPA puts them.
	names := entryNames(t, raw)
	for _, want := range []string{".manifest", ".signatures.json", "data.json", "install.rego"} {
		if !slices.Contains(names, want) {
			t.Errorf("bundle entries %v lack %s", names, want)
		}
	}
	ev, err := b.Prepare(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		eps   float64
		state string
		allow bool
		why   []string
	}{
		{3, "trusted", true, nil},
		{5, "trusted", false, []string{"denied by policy (no reason given)"}},
		{3, "stale", false, []string{"device is not trusted"}},
	} {
		in := map[string]any{"dp_cert": map[string]any{"epsilon": tc.eps}, "attestation": map[string]any{"state": tc.state}}
		d, err := ev.Evaluate(context.Background(), in)
		if err != nil {
			t.Fatal(err)
		}
		if d.Allow != tc.allow || !slices.Equal(d.Reasons, append([]string{}, tc.why...)) {
			t.Errorf("eps %v %s: %+v, want allow %v %q", tc.eps, tc.state, d, tc.allow, tc.why)
		}
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	k := mustKey(t)
	der, err := k.MarshalPKCS8()
	if err != nil {
		t.Fatal(err)
	}
	k2, err := ParseSigningKey(der)
	if err != nil || k2.ID != k.ID || !k2.Key.Equal(k.Key) {
		t.Fatalf("ParseSigningKey = %v, %v", k2.ID, err)
	}
	pub := k.Public()
	if err := pub.Check(); err != nil || !strings.HasPrefix(pub.ID, "tgpol-") || len(pub.ID) != 6+32 {
		t.Errorf("public key %+v: %v", pub, err)
	}
	other := mustKey(t).Public()
	for name, v := range map[string]VerificationKey{
		"algorithm":  {ID: pub.ID, Algorithm: "HS256", PublicKeyPEM: pub.PublicKeyPEM},
		"id":         {ID: other.ID, Algorithm: Algorithm, PublicKeyPEM: pub.PublicKeyPEM},
		"no PEM":     {ID: pub.ID, Algorithm: Algorithm, PublicKeyPEM: "garbage"},
		"two blocks": {ID: pub.ID, Algorithm: Algorithm, PublicKeyPEM: pub.PublicKeyPEM + pub.PublicKeyPEM},
	} {
		if err := v.Check(); err == nil {
			t.Errorf("%s: Check accepted %+v", name, v)
		}
	}
}

func TestSignRefusesBadMeta(t *testing.T) {
	t.Parallel()
	u, k := mustBuild(t, testFiles()), mustKey(t)
	for name, m := range map[string]Meta{
		"zero revision":     {Tenant: "acme", Fleet: "f", Revision: 0},
		"negative revision": {Tenant: "acme", Fleet: "f", Revision: -1},
		"no tenant":         {Fleet: "f", Revision: 1},
		"no fleet":          {Tenant: "acme", Revision: 1},
	} {
		if _, err := Sign(u, m, k); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
	if _, err := Sign(u, testMeta, SigningKey{}); err == nil {
		t.Error("signed without a key")
	}
}

// entry is one file of a rewritten bundle.
type entry struct {
	name     string
	data     []byte
	typeflag byte
	link     string
}

func readEntries(t testing.TB, raw []byte) []entry {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out []entry
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, entry{name: h.Name, data: b, typeflag: h.Typeflag, link: h.Linkname})
	}
}

func entryNames(t testing.TB, raw []byte) []string {
	var names []string
	for _, e := range readEntries(t, raw) {
		names = append(names, strings.TrimPrefix(e.name, "/"))
	}
	return names
}

func writeEntries(t testing.TB, es []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, e := range es {
		tf := e.typeflag
		if tf == 0 {
			tf = tar.TypeReg
		}
		h := &tar.Header{Name: e.name, Mode: 0o644, Typeflag: tf, Linkname: e.link}
		if tf == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if tf == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rewrite applies fn to every entry of raw (nil drops it) and appends extra.
func rewrite(t testing.TB, raw []byte, fn func(e entry) *entry, extra ...entry) []byte {
	t.Helper()
	var out []entry
	for _, e := range readEntries(t, raw) {
		if n := fn(e); n != nil {
			out = append(out, *n)
		}
	}
	return writeEntries(t, append(out, extra...))
}

func replaceIn(name, old, new string) func(e entry) *entry {
	return func(e entry) *entry {
		if strings.TrimPrefix(e.name, "/") == name {
			e.data = bytes.Replace(e.data, []byte(old), []byte(new), 1)
		}
		return &e
	}
}

func drop(name string) func(e entry) *entry {
	return func(e entry) *entry {
		if strings.TrimPrefix(e.name, "/") == name {
			return nil
		}
		return &e
	}
}

func keep(e entry) *entry { return &e }

// TestTamperedBundles: any change to a signed bundle, a missing or foreign
// signature, or a structure a signed bundle never has, is refused.
func TestTamperedBundles(t *testing.T) {
	t.Parallel()
	k := mustKey(t)
	u := mustBuild(t, testFiles())
	raw := mustSign(t, u, testMeta, k)
	other := mustSign(t, u, testMeta, mustKey(t))
	otherFiles := testFiles()
	otherFiles["install.rego"] = []byte(strings.Replace(testPolicy, "default allow := false", "default allow := true", 1))
	sameKeyOther := mustSign(t, mustBuild(t, otherFiles), Meta{Tenant: "acme", Fleet: testMeta.Fleet, Revision: 8}, k)
	otherSig := readEntries(t, sameKeyOther)
	var foreignSig []byte
	for _, e := range otherSig {
		if strings.TrimPrefix(e.name, "/") == ".signatures.json" {
			foreignSig = e.data
		}
	}
	if _, err := Verify(raw, k.Public()); err != nil {
		t.Fatalf("untampered bundle refused: %v", err)
	}
	cases := map[string][]byte{
		"module changed":          rewrite(t, raw, replaceIn("install.rego", "default allow := false", "default allow := true")),
		"module whitespace":       rewrite(t, raw, replaceIn("install.rego", "package", "package ")),
		"data changed":            rewrite(t, raw, replaceIn("data.json", "4", "400")),
		"manifest revision":       rewrite(t, raw, replaceIn(".manifest", `"revision":"7"`, `"revision":"70"`)),
		"manifest fleet":          rewrite(t, raw, replaceIn(".manifest", "flt-aaaa", "flt-bbbb")),
		"signature removed":       rewrite(t, raw, drop(".signatures.json")),
		"module removed":          rewrite(t, raw, drop("install.rego")),
		"manifest removed":        rewrite(t, raw, drop(".manifest")),
		"data removed":            rewrite(t, raw, drop("data.json")),
		"module added":            rewrite(t, raw, keep, entry{name: "/evil.rego", data: []byte("package tensorguard.install\nallow := true\n")}),
		"data file added":         rewrite(t, raw, keep, entry{name: "/x/data.json", data: []byte(`{"a":1}`)}),
		"signature of other file": rewrite(t, raw, func(e entry) *entry { return swapSig(e, foreignSig) }),
		"signed by another key":   other,
		"duplicate module":        rewrite(t, raw, keep, entry{name: "/install.rego", data: []byte(testPolicy)}),
		"symlink":                 rewrite(t, raw, keep, entry{name: "/link.rego", typeflag: tar.TypeSymlink, link: "/etc/passwd"}),
		"path traversal":          rewrite(t, raw, keep, entry{name: "../escape.rego", data: []byte("package x\n")}),
		"wasm":                    rewrite(t, raw, keep, entry{name: "/policy.wasm", data: []byte{0, 'a', 's', 'm'}}),
		"yaml data":               rewrite(t, raw, keep, entry{name: "/data.yaml", data: []byte("a: 1\n")}),
		"not gzip":                []byte("hello"),
		"truncated":               raw[:len(raw)/2],
		"empty":                   nil,
		"too large":               append(append([]byte{}, raw...), make([]byte, MaxBundleSize)...),
	}
	for name, b := range cases {
		got, err := Verify(b, k.Public())
		if err == nil {
			t.Errorf("%s: accepted (revision %d)", name, got.Revision)
			continue
		}
		if !errors.Is(err, ErrRefused) {
			t.Errorf("%s: error %v does not wrap ErrRefused", name, err)
		}
	}
	// The other key's own bundle verifies under its own key only.
	if _, err := Verify(sameKeyOther, k.Public()); err != nil {
		t.Errorf("control: the same key's other bundle refused: %v", err)
	}
}

func swapSig(e entry, sig []byte) *entry {
	if strings.TrimPrefix(e.name, "/") == ".signatures.json" {
		e.data = sig
	}
	return &e
}

func TestVerifyBounds(t *testing.T) {
	t.Parallel()
	k := mustKey(t)
	raw := mustSign(t, mustBuild(t, testFiles()), testMeta, k)
	// A gzip bomb: a small file that decompresses past the limits.
	bomb := rewrite(t, raw, keep, entry{name: "/big.rego", data: make([]byte, MaxFileSize+1)})
	if len(bomb) > MaxBundleSize {
		t.Fatalf("bomb is %d bytes", len(bomb))
	}
	if _, err := Verify(bomb, k.Public()); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Errorf("oversized entry: %v", err)
	}
	var many []entry
	for i := range MaxFiles + 4 {
		many = append(many, entry{name: "/m" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ".rego", data: []byte("package p\n")})
	}
	if _, err := Verify(rewrite(t, raw, keep, many...), k.Public()); err == nil {
		t.Error("too many entries accepted")
	}
}

// TestBuildRefusesBrokenPolicies: each problem names the file and, for
// Rego errors, the line.
func TestBuildRefusesBrokenPolicies(t *testing.T) {
	t.Parallel()
	with := func(name, content string) Files {
		f := testFiles()
		f[name] = []byte(content)
		return f
	}
	for _, tc := range []struct {
		name  string
		files Files
		want  string // in the error
		file  string
		line  int
	}{
		{"parse error", with("install.rego", "package tensorguard.install\n\nallow if {\n\tinput.x ==\n}\n"), "rego_parse_error", "install.rego", 5},
		{"unsafe var", with("install.rego", "package tensorguard.install\n\nallow if {\n\tx > 1\n}\n"), "rego_unsafe_var_error", "install.rego", 4},
		{"undefined function", with("extra.rego", "package tensorguard.extra\n\nf := nope(1)\n"), "rego_type_error", "extra.rego", 3},
		{"http.send", with("extra.rego", "package tensorguard.extra\n\nf := http.send({\"method\": \"get\", \"url\": \"http://x\"})\n"), "http.send", "extra.rego", 3},
		{"rego v0 syntax", with("install.rego", "package tensorguard.install\n\nallow { true }\n"), "rego_parse_error", "install.rego", 3},
		{"no allow rule", Files{"install.rego": []byte("package tensorguard.install\n\nx := 1\n")}, "no rule data.tensorguard.install.allow", "", 0},
		{"no module", Files{"data.json": []byte("{}")}, "no .rego module", "", 0},
		{"bad JSON", with("limits/data.json", "{"), "limits/data.json", "", 0},
		{"bad path", with("../x.rego", "package x\n"), ".. components", "../x.rego", 0},
		{"absolute path", with("/x.rego", "package x\n"), "relative and clean", "/x.rego", 0},
		{"hidden path", with(".x/a.rego", "package x\n"), "hidden", ".x/a.rego", 0},
		{"other file", with("README.md", "hello"), "not a policy module", "README.md", 0},
		{"too large", with("big.rego", strings.Repeat("#", MaxFileSize+1)), "per file", "big.rego", 0},
		{"no files", Files{}, "no files", "", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Build(tc.files)
			var be *BuildError
			if !errors.As(err, &be) || !errors.Is(err, ErrInvalid) {
				t.Fatalf("Build = %v, want a *BuildError", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			if tc.file == "" {
				return
			}
			found := false
			for _, p := range be.Problems {
				if p.File == tc.file && (tc.line == 0 || p.Line == tc.line) {
					found = true
				}
			}
			if !found {
				t.Errorf("no problem at %s:%d in %+v", tc.file, tc.line, be.Problems)
			}
		})
	}
}

func TestReadDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("install.rego", testPolicy)
	write("install_test.rego", "package tensorguard.install_test\n")
	write("limits/data.json", `{"max_epsilon": 4}`)
	write("limits/data.yaml", "other: 1\n")
	write("README.md", "docs")
	write(".git/config", "x")
	write(".hidden.rego", "package x\n")
	f, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Names(); !slices.Equal(got, []string{"install.rego", "limits/data.json", "limits/data.yaml"}) {
		t.Errorf("ReadDir = %v", got)
	}
	if err := os.Symlink("/etc/hostname", filepath.Join(dir, "link.rego")); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadDir(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("symlink: %v", err)
	}
	if _, err := ReadDir(t.TempDir()); err == nil {
		t.Error("empty directory accepted")
	}
}

func TestEvaluateDeniesByDefault(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, policy string
		want         []string
	}{
		{"allow not boolean", "package tensorguard.install\n\nallow := \"yes\"\n", []string{"denied by policy (no reason given)"}},
		{"allow undefined", "package tensorguard.install\n\nallow if input.never\n", []string{AllowRule + " is undefined"}},
		{"deny set", "package tensorguard.install\n\nallow if count(deny) == 0\n\ndeny contains \"b\" if true\n\ndeny contains \"a\" if true\n", []string{"a", "b"}},
		{"non-string reasons", "package tensorguard.install\n\nallow := false\n\nreasons := [1, {\"k\": true}]\n", []string{"1", `{"k":true}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := mustBuild(t, Files{"install.rego": []byte(tc.policy)}).Prepare(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			d, err := ev.Evaluate(context.Background(), map[string]any{})
			if err != nil {
				t.Fatal(err)
			}
			if d.Allow || !slices.Equal(d.Reasons, tc.want) {
				t.Errorf("decision = %+v, want deny %q", d, tc.want)
			}
		})
	}
}

// FuzzVerify: no input makes Verify panic, and whatever it accepts is the
// bundle that was signed.
func FuzzVerify(f *testing.F) {
	k, err := NewSigningKey()
	if err != nil {
		f.Fatal(err)
	}
	u, err := Build(testFiles())
	if err != nil {
		f.Fatal(err)
	}
	raw, err := Sign(u, testMeta, k)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add(raw[:len(raw)/2])
	f.Add(rewrite(f, raw, drop(".signatures.json")))
	f.Add(rewrite(f, raw, replaceIn("data.json", "4", "5")))
	f.Add([]byte{0x1f, 0x8b})
	pub := k.Public()
	want := entryNames(f, raw)
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Verify(b, pub)
		if err != nil {
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("error %v does not wrap ErrRefused", err)
			}
			return
		}
		if got.Revision != testMeta.Revision || got.Fleet != testMeta.Fleet || !slices.Equal(entryNames(t, b), want) {
			t.Fatalf("accepted a different bundle: %+v", got)
		}
	})
}
