package attest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// PCR rule modes.
const (
	// ModeBaseline: the PCR must equal the device's baseline value (see the
	// package doc for how a baseline is recorded).
	ModeBaseline = "baseline"
	// ModeGolden: the PCR must equal one of the rule's Allow digests.
	ModeGolden = "golden"
)

// NumPCRs is the number of PCRs of a PC Client TPM (0–23).
const NumPCRs = 24

// DefaultPCRs is the selection quoted when a policy names none: the SRTM
// firmware, option-ROM, boot-loader and secure-boot PCRs.
var DefaultPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7}

// Policy is a fleet's attestation policy. It is JSON so it can live in the
// fleet policy document; the zero value is valid and strict (PCRs 0–7 of
// the SHA-256 bank against the baseline, hardware TPMs only).
type Policy struct {
	// PCRs are the SHA-256 PCR indices quoted (default DefaultPCRs).
	PCRs []int `json:"pcrs,omitempty"`
	// Rules give the rule of individual PCRs; a selected PCR without one
	// gets Default. Keys are PCR indices.
	Rules map[int]PCRRule `json:"rules,omitempty"`
	// Default is the mode of selected PCRs without a rule: "baseline"
	// (default). There is deliberately no "any": a PCR nobody checks should
	// not be quoted.
	Default string `json:"default,omitempty"`
	// AllowedKinds are the TPM kinds that can be trusted: "hardware",
	// "swtpm", "simulated" (default only "hardware").
	AllowedKinds []string `json:"allowed_kinds,omitempty"`
}

// PCRRule is the rule of one PCR.
type PCRRule struct {
	Mode string `json:"mode"` // ModeGolden or ModeBaseline
	// Allow are the accepted values (hex SHA-256 digests) of a golden rule.
	Allow []string `json:"allow,omitempty"`
}

// compiledPolicy is a validated Policy in the form Verify uses.
type compiledPolicy struct {
	pcrs    []int // ascending, unique
	golden  map[int][][sha256.Size]byte
	kinds   []string
	baseReq []int // PCRs in baseline mode, ascending
}

// Selection returns the PCR indices to quote, ascending.
func (p Policy) Selection() []int {
	if len(p.PCRs) == 0 {
		return slices.Clone(DefaultPCRs)
	}
	s := slices.Clone(p.PCRs)
	slices.Sort(s)
	return slices.Compact(s)
}

// Validate reports whether p is usable; Verify refuses (fails closed on) a
// policy that is not.
func (p Policy) Validate() error {
	_, err := p.compile()
	return err
}

func (p Policy) compile() (*compiledPolicy, error) {
	c := &compiledPolicy{pcrs: p.Selection(), golden: make(map[int][][sha256.Size]byte)}
	for _, i := range c.pcrs {
		if i < 0 || i >= NumPCRs {
			return nil, fmt.Errorf("policy: PCR %d out of range 0-%d", i, NumPCRs-1)
		}
	}
	def := p.Default
	if def == "" {
		def = ModeBaseline
	}
	if def != ModeBaseline {
		return nil, fmt.Errorf("policy: default mode %q (only %q)", p.Default, ModeBaseline)
	}
	for i, r := range p.Rules {
		if !slices.Contains(c.pcrs, i) {
			return nil, fmt.Errorf("policy: rule for PCR %d, which is not selected", i)
		}
		switch r.Mode {
		case ModeBaseline:
			if len(r.Allow) != 0 {
				return nil, fmt.Errorf("policy: PCR %d: a baseline rule has no allow-list", i)
			}
		case ModeGolden:
			if len(r.Allow) == 0 {
				return nil, fmt.Errorf("policy: PCR %d: golden rule with an empty allow-list", i)
			}
			for _, h := range r.Allow {
				b, err := hex.DecodeString(h)
				if err != nil || len(b) != sha256.Size {
					return nil, fmt.Errorf("policy: PCR %d: %q is not a hex SHA-256 digest", i, h)
				}
				c.golden[i] = append(c.golden[i], [sha256.Size]byte(b))
			}
		default:
			return nil, fmt.Errorf("policy: PCR %d: mode %q (want %q or %q)", i, r.Mode, ModeGolden, ModeBaseline)
		}
	}
	for _, i := range c.pcrs {
		if _, ok := c.golden[i]; !ok {
			c.baseReq = append(c.baseReq, i)
		}
	}
	c.kinds = p.AllowedKinds
	if len(c.kinds) == 0 {
		c.kinds = []string{wire.TPMKindHardware}
	}
	for _, k := range c.kinds {
		if k != wire.TPMKindHardware && k != wire.TPMKindSWTPM && k != wire.TPMKindSimulated {
			return nil, fmt.Errorf("policy: TPM kind %q cannot be allowed", k)
		}
	}
	return c, nil
}
