package enrollbind

import (
	"encoding/hex"
	"testing"
)

// TestQualifyingData pins the binding (the agent and the control plane may
// be different versions, so it must never change silently) and shows that
// each input, and the boundary between them, matters. The golden value was
// computed independently (Python hashlib) from the documented formula.
func TestQualifyingData(t *testing.T) {
	const golden = "04075b39dab0a06d1c99cae480430fdc44bef005b19184c0d2d05748e482fcb3"
	got := hex.EncodeToString(QualifyingData("tok-a", []byte("csr")))
	if got != golden {
		t.Fatalf("QualifyingData changed: %s", got)
	}
	cases := []struct {
		token string
		csr   string
	}{
		{"tok-b", "csr"},
		{"tok-a", "csR"},
		{"tok-ac", "sr"},
		{"", "tok-acsr"},
	}
	for _, c := range cases {
		if hex.EncodeToString(QualifyingData(c.token, []byte(c.csr))) == golden {
			t.Errorf("QualifyingData(%q, %q) collides", c.token, c.csr)
		}
	}
	if n := len(QualifyingData("t", nil)); n != Size {
		t.Errorf("size %d, want %d", n, Size)
	}
}

// TestQualifyingDataKEM pins the binding with a KEM public key (golden
// value from Python hashlib over the documented formula), shows that it
// covers every input, and that without a key it is the v1 binding.
func TestQualifyingDataKEM(t *testing.T) {
	const golden = "304e16f4f2723b636acbbe210623027baf7345980c4ae15727d6db348a4af071"
	got := hex.EncodeToString(QualifyingDataKEM("tok-a", []byte("csr"), []byte("kem")))
	if got != golden {
		t.Fatalf("QualifyingDataKEM changed: %s", got)
	}
	v1 := hex.EncodeToString(QualifyingData("tok-a", []byte("csr")))
	cases := []struct {
		token, csr, kem string
	}{
		{"tok-b", "csr", "kem"},
		{"tok-a", "csR", "kem"},
		{"tok-a", "csr", "keM"},
		{"tok-a", "csrkem", ""},
		{"tok-acsr", "", "kem"},
	}
	for _, c := range cases {
		h := hex.EncodeToString(QualifyingDataKEM(c.token, []byte(c.csr), []byte(c.kem)))
		if h == golden || h == v1 {
			t.Errorf("QualifyingDataKEM(%q, %q, %q) collides", c.token, c.csr, c.kem)
		}
	}
	if hex.EncodeToString(QualifyingDataKEM("tok-a", []byte("csr"), nil)) != v1 {
		t.Error("without a KEM key the binding is not the v1 binding")
	}
	if n := len(QualifyingDataKEM("t", nil, []byte("k"))); n != Size {
		t.Errorf("size %d, want %d", n, Size)
	}
}
