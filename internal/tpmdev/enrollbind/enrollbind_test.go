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
