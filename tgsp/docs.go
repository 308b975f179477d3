package tgsp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"time"
)

// Attached documents (SPEC.md §5). Both travel in clear beside the payload so
// that a control plane or an agent's policy can read them without a key; the
// manifest binds them by size and SHA-256.

// DPCertSchema is the schema value of a v1 dp_cert.json.
const DPCertSchema = "tgsp.dp_cert.v1"

// EvidenceSchema is the schema value of a v1 evidence.json.
const EvidenceSchema = "tgsp.evidence.v1"

// DPCert states the differential-privacy guarantee a model was trained under.
type DPCert struct {
	Schema          string  `json:"schema"`
	Epsilon         float64 `json:"epsilon"`
	Delta           float64 `json:"delta"`
	Accountant      string  `json:"accountant"` // rdp | prv | moments
	NoiseMultiplier float64 `json:"noise_multiplier"`
	ClippingNorm    float64 `json:"clipping_norm"`
	SamplingRate    float64 `json:"sampling_rate"`
	Steps           int64   `json:"steps"`
	DatasetSize     int64   `json:"dataset_size"`
	// Optional context.
	Sampling    string `json:"sampling,omitempty"` // e.g. "poisson"
	TrainingRun string `json:"training_run,omitempty"`
	IssuedAt    string `json:"issued_at,omitempty"` // RFC 3339
}

// Evidence records how a package's content came to be. Only schema is
// required; the rest is the publisher's claims, which policy may inspect.
type Evidence struct {
	Schema    string            `json:"schema"`
	BaseModel string            `json:"base_model,omitempty"`
	Datasets  []EvidenceDataset `json:"datasets,omitempty"`
	Trainer   string            `json:"trainer,omitempty"`
	SourceRef string            `json:"source_ref,omitempty"`
	Metrics   map[string]any    `json:"metrics,omitempty"`
	Claims    map[string]any    `json:"claims,omitempty"`
}

// EvidenceDataset names one data set that went into training.
type EvidenceDataset struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256,omitempty"`
	Size   int64  `json:"size,omitempty"`
}

// decodeStrict decodes one JSON object into v, refusing unknown fields and
// trailing data. encoding/json alone is too lenient for signed documents: it
// matches keys case-insensitively (even "ſchema" for "schema") and keeps the
// last of duplicate keys, so two readers could disagree about what was
// signed. decodeStrict therefore also refuses duplicate keys at any depth,
// and, in objects nested at most strictDepth deep (-1: all), any key that is
// not lowercase ASCII letters, digits and underscores — the only form our
// field names take.
func decodeStrict(b []byte, v any, strictDepth int) error {
	if err := checkKeys(b, strictDepth); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("trailing data after the JSON object")
	}
	return nil
}

// checkKeys walks the JSON tokens of b; see decodeStrict.
func checkKeys(b []byte, strictDepth int) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	type frame struct {
		object bool
		keys   map[string]bool
		expect bool // in an object, the next token is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		if top != nil && top.object && top.expect {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				if len(stack) > 0 && stack[len(stack)-1].object {
					stack[len(stack)-1].expect = true
				}
				continue
			}
			key := tok.(string) // the decoder guarantees object keys are strings
			if top.keys[key] {
				return fmt.Errorf("duplicate key %q", key)
			}
			top.keys[key] = true
			if (strictDepth < 0 || len(stack) <= strictDepth) && !lowerKey(key) {
				return fmt.Errorf("key %q is not a lowercase field name", key)
			}
			top.expect = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, keys: map[string]bool{}, expect: true})
			continue
		case json.Delim('['):
			stack = append(stack, &frame{})
			continue
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
		}
		// A value ended: the enclosing object expects a key next.
		if len(stack) > 0 && stack[len(stack)-1].object {
			stack[len(stack)-1].expect = true
		}
	}
}

func lowerKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// ParseDPCert decodes and validates a dp_cert.json document.
func ParseDPCert(b []byte) (*DPCert, error) {
	var c DPCert
	if err := decodeStrict(b, &c, -1); err != nil {
		return nil, malformed("dp_cert.json: %v", err)
	}
	finite := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	switch {
	case c.Schema != DPCertSchema:
		return nil, malformed("dp_cert.json: schema %q, want %q", c.Schema, DPCertSchema)
	case !finite(c.Epsilon) || c.Epsilon <= 0:
		return nil, malformed("dp_cert.json: epsilon must be a positive number")
	case !finite(c.Delta) || c.Delta <= 0 || c.Delta >= 1:
		return nil, malformed("dp_cert.json: delta must be in (0, 1)")
	case c.Accountant != "rdp" && c.Accountant != "prv" && c.Accountant != "moments":
		return nil, malformed("dp_cert.json: accountant %q is not rdp, prv or moments", c.Accountant)
	case !finite(c.NoiseMultiplier) || c.NoiseMultiplier <= 0:
		return nil, malformed("dp_cert.json: noise_multiplier must be positive")
	case !finite(c.ClippingNorm) || c.ClippingNorm <= 0:
		return nil, malformed("dp_cert.json: clipping_norm must be positive")
	case !finite(c.SamplingRate) || c.SamplingRate <= 0 || c.SamplingRate > 1:
		return nil, malformed("dp_cert.json: sampling_rate must be in (0, 1]")
	case c.Steps <= 0:
		return nil, malformed("dp_cert.json: steps must be positive")
	case c.DatasetSize <= 0:
		return nil, malformed("dp_cert.json: dataset_size must be positive")
	case c.IssuedAt != "" && !isRFC3339(c.IssuedAt):
		return nil, malformed("dp_cert.json: issued_at %q is not an RFC 3339 time", c.IssuedAt)
	}
	return &c, nil
}

func isRFC3339(s string) bool {
	_, err := time.Parse(time.RFC3339, s)
	return err == nil
}

// ParseEvidence decodes and validates an evidence.json document.
func ParseEvidence(b []byte) (*Evidence, error) {
	var e Evidence
	if err := decodeStrict(b, &e, 1); err != nil {
		return nil, malformed("evidence.json: %v", err)
	}
	if e.Schema != EvidenceSchema {
		return nil, malformed("evidence.json: schema %q, want %q", e.Schema, EvidenceSchema)
	}
	for i, d := range e.Datasets {
		if d.Name == "" {
			return nil, malformed("evidence.json: dataset %d has no name", i)
		}
	}
	return &e, nil
}
