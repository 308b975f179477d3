package plancache

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/ golden files")

// testAEAD is a fixed AES-256-GCM cipher for the format tests (the cache's
// own key comes from crypto/rand and is sealed by the TPM).
func testAEAD(t testing.TB, seed byte) cipher.AEAD {
	t.Helper()
	key := make([]byte, 32)
	for i := range key {
		key[i] = seed + byte(i)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return aead
}

var goldenKey = Key{
	ModelSHA256:     [32]byte{0xde, 0xad, 0xbe, 0xef},
	TensorRTVersion: "10.3.0",
	BuildOptions:    "v1 workspace=0 fp16=false tf32=false",
	Device:          "Orin sm_87 cuda 12.6",
}

var goldenPlan = []byte("a TensorRT plan would be here; these bytes stand in for one")

// fixedNonce makes sealEntry deterministic for the golden file.
var fixedNonce = []byte("nonce-123456")

func mustSeal(t testing.TB, aead cipher.AEAD, k Key, plan []byte) []byte {
	t.Helper()
	e, err := sealEntry(aead, k.encode(), plan, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestEntryRoundTrip(t *testing.T) {
	t.Parallel()
	aead := testAEAD(t, 1)
	big := make([]byte, 1<<20)
	if _, err := rand.Read(big); err != nil {
		t.Fatal(err)
	}
	for _, plan := range [][]byte{{0}, goldenPlan, big} {
		entry := mustSeal(t, aead, goldenKey, plan)
		if len(entry) != len(plan)+entryOverhead {
			t.Errorf("entry of %d bytes for a %d-byte plan", len(entry), len(plan))
		}
		got, err := openEntry(aead, goldenKey.encode(), bytes.Clone(entry))
		if err != nil {
			t.Fatalf("%d-byte plan: %v", len(plan), err)
		}
		if !bytes.Equal(got, plan) {
			t.Fatalf("%d-byte plan: round trip changed it", len(plan))
		}
	}
	// Two entries of one plan differ (fresh nonces).
	if bytes.Equal(mustSeal(t, aead, goldenKey, goldenPlan), mustSeal(t, aead, goldenKey, goldenPlan)) {
		t.Error("two seals of one plan are identical")
	}
}

// genuineEntry is goldenPlan sealed for goldenKey with a fixed nonce (not
// the golden file's): deterministic, so that FuzzOpenEntry's worker
// processes agree on which inputs are genuine.
func genuineEntry(t testing.TB, aead cipher.AEAD) []byte {
	t.Helper()
	e, err := sealEntry(aead, goldenKey.encode(), goldenPlan, bytes.NewReader([]byte("nonce-abcdef")))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// damaged lists ways an entry goes wrong, built from genuineEntry; every
// one must be refused. They also seed FuzzOpenEntry.
func damaged(t testing.TB, aead cipher.AEAD) map[string][]byte {
	entry := genuineEntry(t, aead)
	flip := func(i int) []byte {
		c := bytes.Clone(entry)
		c[i] ^= 0x01
		return c
	}
	otherKeys := map[string]Key{}
	for name, change := range map[string]func(*Key){
		"model":   func(k *Key) { k.ModelSHA256[31] ^= 1 },
		"version": func(k *Key) { k.TensorRTVersion = "10.3.1" },
		"options": func(k *Key) { k.BuildOptions += " " },
		"device":  func(k *Key) { k.Device = "Orin sm_87 cuda 12.2" },
	} {
		k := goldenKey
		change(&k)
		otherKeys[name] = k
	}
	v2 := bytes.Clone(entry)
	v2[7] = 2
	cases := map[string][]byte{
		"empty":             {},
		"header only":       entry[:headerSize],
		"shorter than tag":  entry[:entryOverhead-1],
		"no plan, tag only": entry[:entryOverhead],
		"magic":             flip(0),
		"version":           v2,
		"nonce":             flip(headerSize),
		"ciphertext":        flip(headerSize + nonceSize + 3),
		"tag":               flip(len(entry) - 1),
		"truncated":         entry[:len(entry)-1],
		"trailing byte":     append(bytes.Clone(entry), 0),
		"another cipher": func() []byte {
			return mustSeal(t, testAEAD(t, 2), goldenKey, goldenPlan)
		}(),
	}
	for name, k := range otherKeys {
		// An entry sealed for another key, presented as goldenKey's: what a
		// renamed file looks like.
		cases["sealed for another "+name] = mustSeal(t, aead, k, goldenPlan)
	}
	return cases
}

func TestOpenEntryRefuses(t *testing.T) {
	t.Parallel()
	aead := testAEAD(t, 1)
	for name, data := range damaged(t, aead) {
		plan, err := openEntry(aead, goldenKey.encode(), bytes.Clone(data))
		if err == nil || !errors.Is(err, errEntry) || plan != nil {
			t.Errorf("%s: openEntry = %q, %v; want a refusal", name, plan, err)
		}
	}
}

// TestEntryGolden pins the entry format: the golden file (made with a fixed
// cipher key and nonce) must still open, and sealing again must reproduce
// it byte for byte. Regenerate with -update only for a new format version.
func TestEntryGolden(t *testing.T) {
	t.Parallel()
	aead := testAEAD(t, 1)
	entry, err := sealEntry(aead, goldenKey.encode(), goldenPlan, bytes.NewReader(fixedNonce))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "entry-v1.golden")
	if *update {
		if err := os.WriteFile(path, entry, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	golden, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(entry, golden) {
		t.Fatalf("sealing no longer reproduces %s:\n got %x\nwant %x", path, entry, golden)
	}
	if !bytes.HasPrefix(golden, []byte("TGPLAN\x00\x01nonce-123456")) {
		t.Fatalf("golden header %q", golden[:headerSize+nonceSize])
	}
	plan, err := openEntry(aead, goldenKey.encode(), bytes.Clone(golden))
	if err != nil || !bytes.Equal(plan, goldenPlan) {
		t.Fatalf("golden entry: %q, %v", plan, err)
	}
}

func TestKeyEncoding(t *testing.T) {
	t.Parallel()
	keys := []Key{
		goldenKey,
		{TensorRTVersion: "10.3", BuildOptions: "0x", Device: "d"},
		{TensorRTVersion: "10.30", BuildOptions: "x", Device: "d"},
		{TensorRTVersion: "10.3", BuildOptions: "0", Device: "xd"},
		NewKey([]byte("model"), "10.3.0", "", "d"),
		NewKey([]byte("model2"), "10.3.0", "", "d"),
	}
	seen := map[string]int{}
	for i, k := range keys {
		id := k.fileID()
		if j, ok := seen[id]; ok {
			t.Errorf("keys %d and %d share file ID %s", i, j, id)
		}
		seen[id] = i
		if !isEntryName(id + entrySuffix) {
			t.Errorf("%q is not an entry name", id+entrySuffix)
		}
	}
	for _, name := range []string{"key.sealed", ".tmp-1", goldenKey.fileID(), "X" + goldenKey.fileID()[1:] + entrySuffix, goldenKey.fileID()[1:] + entrySuffix} {
		if isEntryName(name) {
			t.Errorf("%q taken for an entry name", name)
		}
	}
	if err := (Key{Device: "d"}).validate(); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("key without version: %v", err)
	}
	if err := (Key{TensorRTVersion: "10.3.0", Device: string(make([]byte, maxKeyField+1))}).validate(); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("huge device field: %v", err)
	}
}

// FuzzOpenEntry: openEntry never panics, refuses everything but a genuine
// entry for its key (with an error wrapping errEntry), and sealEntry's
// output always opens to the same plan.
func FuzzOpenEntry(f *testing.F) {
	aead := testAEAD(f, 1)
	genuine := genuineEntry(f, aead)
	golden, err := os.ReadFile(filepath.Join("testdata", "entry-v1.golden"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(genuine)
	f.Add(golden)
	for _, d := range damaged(f, aead) {
		f.Add(d)
	}
	key := goldenKey.encode()
	f.Fuzz(func(t *testing.T, data []byte) {
		plan, err := openEntry(aead, key, bytes.Clone(data))
		if err == nil {
			if !bytes.Equal(data, genuine) && !bytes.Equal(data, golden) {
				t.Fatalf("opened a forged entry %x to %q", data, plan)
			}
			if !bytes.Equal(plan, goldenPlan) {
				t.Fatalf("genuine entry opened to %q", plan)
			}
		} else if !errors.Is(err, errEntry) || plan != nil {
			t.Fatalf("refusal %v with plan %q", err, plan)
		}

		// Round trip, with the fuzz input as the plan.
		entry, err := sealEntry(aead, key, data, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		back, err := openEntry(aead, key, entry)
		if err != nil || !bytes.Equal(back, data) {
			t.Fatalf("round trip of %x: %x, %v", data, back, err)
		}
	})
}
