package attest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// Sentinel errors of HandleChallenge; returned errors wrap them.
var (
	// ErrMalformed means the payload is not a well-formed challenge.
	ErrMalformed = errors.New("attest: malformed challenge")
	// ErrDuplicate means the challenge id was seen recently (a redelivery).
	ErrDuplicate = errors.New("attest: challenge already seen")
)

// Limits of a well-formed challenge.
const (
	NonceSize         = 32   // bytes
	MaxChallengeBytes = 4096 // a challenge is a few hundred bytes; refuse more before parsing
	MaxIDLength       = 128
)

// ParseChallenge decodes and checks a challenge: one JSON object of schema
// wire.AttestChallengeSchema, a non-empty id of at most MaxIDLength
// printable ASCII characters (no spaces), a nonce of exactly NonceSize
// bytes, 1..24 PCR indices in 0..23, strictly ascending (so unique), and
// issued_at and expires_at set with expires_at after issued_at. Unknown
// fields are ignored: the control plane may add optional ones within a
// schema version. Errors wrap ErrMalformed. Whether the challenge has
// expired is not checked here: that is answered, not dropped.
func ParseChallenge(payload []byte) (*wire.AttestChallenge, error) {
	if len(payload) > MaxChallengeBytes {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(payload), MaxChallengeBytes)
	}
	var c wire.AttestChallenge
	dec := json.NewDecoder(bytes.NewReader(payload))
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrMalformed)
	}
	if err := checkChallenge(&c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return &c, nil
}

func checkChallenge(c *wire.AttestChallenge) error {
	if c.Schema != wire.AttestChallengeSchema {
		return fmt.Errorf("schema %q, want %q", c.Schema, wire.AttestChallengeSchema)
	}
	if c.ID == "" || len(c.ID) > MaxIDLength {
		return fmt.Errorf("id must be 1..%d characters", MaxIDLength)
	}
	for i := 0; i < len(c.ID); i++ {
		if b := c.ID[i]; b <= ' ' || b > '~' {
			return errors.New("id must be printable ASCII without spaces")
		}
	}
	if len(c.Nonce) != NonceSize {
		return fmt.Errorf("nonce has %d bytes, want %d", len(c.Nonce), NonceSize)
	}
	if len(c.PCRs) == 0 || len(c.PCRs) > tpmdev.MaxPCR+1 {
		return fmt.Errorf("%d PCRs, want 1..%d", len(c.PCRs), tpmdev.MaxPCR+1)
	}
	for i, p := range c.PCRs {
		if p < 0 || p > tpmdev.MaxPCR {
			return fmt.Errorf("PCR %d out of range 0..%d", p, tpmdev.MaxPCR)
		}
		if i > 0 && p <= c.PCRs[i-1] {
			return errors.New("PCRs must be unique and ascending")
		}
	}
	if c.IssuedAt.IsZero() || c.ExpiresAt.IsZero() {
		return errors.New("issued_at and expires_at are required")
	}
	if !c.ExpiresAt.After(c.IssuedAt) {
		return errors.New("expires_at is not after issued_at")
	}
	return nil
}
