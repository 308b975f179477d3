package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"time"
	"unicode/utf8"
)

// Entry is one audited mutation, a link of its tenant's hash chain.
type Entry struct {
	Tenant string `json:"tenant"`
	// Seq is 1-based and contiguous per tenant.
	Seq uint64 `json:"seq"`
	// Time is when the mutation happened; Next stores it in UTC, truncated
	// to the microsecond (what PostgreSQL's timestamptz keeps).
	Time time.Time `json:"time"`
	// Actor is who: "op-…", "key-…", "device:dev-…" or "system".
	Actor string `json:"actor"`
	// Action is what, as "noun.verb": "fleet.create", "rollout.pause".
	Action string `json:"action"`
	// Target is the id of the object acted on, if any.
	Target string `json:"target,omitempty"`
	// RequestID ties the entry to the API request and its logs.
	RequestID string `json:"request_id,omitempty"`
	// Details is an optional JSON object, in canonical form: compact, keys
	// sorted (Next rewrites it so). It must not hold secrets.
	Details json.RawMessage `json:"details,omitempty"`
	// PrevHash is the previous entry's Hash, or Genesis(Tenant) for seq 1.
	PrevHash Hash `json:"prev_hash"`
	// Hash is ComputeHash of this entry.
	Hash Hash `json:"hash"`
}

// Hash is a SHA-256 digest; it encodes as 64 lower-case hex digits in JSON
// and text.
type Hash [sha256.Size]byte

// String returns the hash in hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// MarshalText implements encoding.TextMarshaler.
func (h Hash) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// UnmarshalText accepts exactly 64 hex digits.
func (h *Hash) UnmarshalText(b []byte) error {
	if len(b) != 2*sha256.Size {
		return fmt.Errorf("hash must be %d hex digits, got %d characters", 2*sha256.Size, len(b))
	}
	if _, err := hex.Decode(h[:], b); err != nil {
		return fmt.Errorf("hash: %w", err)
	}
	return nil
}

// ParseHash parses 64 hex digits.
func ParseHash(s string) (Hash, error) {
	var h Hash
	err := h.UnmarshalText([]byte(s))
	return h, err
}

const (
	// domain separates this hash from every other use of SHA-256; a new
	// encoding gets a new domain.
	domain        = "tg-audit-v1"
	genesisDomain = "tg-audit-v1 genesis"

	// maxFieldLen bounds each string field and maxDetailsLen the details,
	// so an entry is always small and every length fits its prefix.
	maxFieldLen   = 4 << 10
	maxDetailsLen = 64 << 10
)

// Genesis is the PrevHash of a tenant's first entry:
// SHA-256("tg-audit-v1 genesis" || tenant). It differs per tenant, so a
// chain's first entry cannot be moved into another tenant's chain.
func Genesis(tenant string) Hash {
	return sha256.Sum256([]byte(genesisDomain + tenant))
}

// Next returns e made into the entry after prev in its tenant's chain (the
// first entry when prev is nil): Seq, PrevHash and Hash are filled in, Time
// is normalised to UTC microseconds and Details to canonical JSON. The
// caller sets Tenant, Time, Actor, Action and, if any, Target, RequestID
// and Details; prev must be the tenant's last stored entry.
func Next(prev *Entry, e Entry) (Entry, error) {
	if prev == nil {
		e.Seq = 1
		e.PrevHash = Genesis(e.Tenant)
	} else {
		if prev.Tenant != e.Tenant {
			return Entry{}, invalid("an entry of tenant %q cannot follow tenant %q's entry", e.Tenant, prev.Tenant)
		}
		if prev.Seq == 0 || prev.Seq == math.MaxUint64 {
			return Entry{}, invalid("previous entry has seq %d", prev.Seq)
		}
		e.Seq = prev.Seq + 1
		e.PrevHash = prev.Hash
	}
	if e.Time.IsZero() {
		return Entry{}, invalid("time is not set")
	}
	e.Time = e.Time.UTC().Truncate(time.Microsecond)
	d, err := CanonicalDetails(e.Details)
	if err != nil {
		return Entry{}, err
	}
	e.Details = d
	h, err := ComputeHash(e)
	if err != nil {
		return Entry{}, err
	}
	e.Hash = h
	return e, nil
}

// ComputeHash returns the hash an entry must carry:
//
//	SHA-256( lp("tg-audit-v1") || lp(tenant) || u64(seq) || i64(time as Unix microseconds)
//	         || lp(actor) || lp(action) || lp(target) || lp(request id)
//	         || lp(CanonicalDetails(details)) || prev hash (32) )
//
// where lp(x) is len(x) as a big-endian uint32 followed by x, u64 and i64
// are big-endian 8-byte integers, and absent details are empty. Every field
// is length-prefixed or fixed-size, so no two entries share an encoding.
// Details are hashed in canonical form, so re-serialising them (indented
// JSON output, a database that reorders keys) does not break the chain,
// while any change of their meaning does; number literals must be kept as
// written (1.0 is not 1), so store details as text or PostgreSQL json, not
// jsonb. The Hash field is not an input.
func ComputeHash(e Entry) (Hash, error) {
	p, err := preimage(e)
	if err != nil {
		return Hash{}, err
	}
	return sha256.Sum256(p), nil
}

// preimage checks e and returns the bytes its hash is computed over.
func preimage(e Entry) ([]byte, error) {
	if err := checkEntry(e); err != nil {
		return nil, err
	}
	d, err := CanonicalDetails(e.Details)
	if err != nil {
		return nil, err
	}
	e.Details = d
	return encode(e), nil
}

// encode is the hash preimage of a checked entry whose details are
// canonical.
func encode(e Entry) []byte {
	b := make([]byte, 0, 128+len(e.Tenant)+len(e.Actor)+len(e.Action)+len(e.Target)+len(e.RequestID)+len(e.Details))
	b = appendLP(b, domain)
	b = appendLP(b, e.Tenant)
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time.UnixMicro()))
	b = appendLP(b, e.Actor)
	b = appendLP(b, e.Action)
	b = appendLP(b, e.Target)
	b = appendLP(b, e.RequestID)
	b = appendLP(b, string(e.Details))
	return append(b, e.PrevHash[:]...)
}

func appendLP(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// checkEntry enforces what makes an entry hashable without ambiguity and
// able to survive a JSON round trip unchanged.
func checkEntry(e Entry) error {
	if e.Seq == 0 {
		return invalid("seq must start at 1")
	}
	for _, f := range []struct {
		name, v  string
		required bool
	}{
		{"tenant", e.Tenant, true},
		{"actor", e.Actor, true},
		{"action", e.Action, true},
		{"target", e.Target, false},
		{"request id", e.RequestID, false},
	} {
		switch {
		case f.required && f.v == "":
			return invalid("%s is empty", f.name)
		case len(f.v) > maxFieldLen:
			return invalid("%s is %d bytes, more than %d", f.name, len(f.v), maxFieldLen)
		case !utf8.ValidString(f.v):
			return invalid("%s is not valid UTF-8", f.name)
		}
	}
	if e.Time.IsZero() {
		return invalid("time is not set")
	}
	if y := e.Time.UTC().Year(); y < 1 || y > 9999 {
		return invalid("time %s is outside years 1 to 9999", e.Time.UTC().Format(time.RFC3339))
	}
	if e.Time.Nanosecond()%int(time.Microsecond) != 0 {
		return invalid("time %s is finer than a microsecond", e.Time.Format(time.RFC3339Nano))
	}
	if len(e.Details) > maxDetailsLen {
		return invalid("details are %d bytes, more than %d", len(e.Details), maxDetailsLen)
	}
	return nil
}

// maxDetailsDepth bounds the nesting of details.
const maxDetailsDepth = 32

// CanonicalDetails returns d as compact JSON with object keys sorted and
// number literals kept as written: what encoding/json writes (HTML
// characters escaped), so marshalling an Entry leaves canonical details
// unchanged. Empty input and JSON null both mean "no details" and give nil.
// Anything but one JSON object in valid UTF-8, without duplicate keys and
// nested at most 32 deep, is ErrInvalidEntry: with duplicates, parsers
// disagree on what the details say.
func CanonicalDetails(d json.RawMessage) (json.RawMessage, error) {
	if len(bytes.TrimSpace(d)) == 0 {
		return nil, nil
	}
	if len(d) > maxDetailsLen {
		return nil, invalid("details are %d bytes, more than %d", len(d), maxDetailsLen)
	}
	if !utf8.Valid(d) {
		return nil, invalid("details are not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(d))
	dec.UseNumber()
	v, err := decodeStrict(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, invalid("details have data after the JSON value")
	}
	switch v.(type) {
	case nil:
		return nil, nil
	case map[string]any:
	default:
		return nil, invalid("details must be a JSON object")
	}
	out, err := json.Marshal(v)
	if err != nil {
		return nil, invalid("details: %v", err)
	}
	return out, nil
}

// decodeStrict decodes one JSON value like json.Unmarshal into an any
// (numbers as json.Number) but rejects duplicate object keys and deep
// nesting.
func decodeStrict(dec *json.Decoder, depth int) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, invalid("details are not JSON: %v", err)
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return tok, nil // string, json.Number, bool or nil
	}
	if depth >= maxDetailsDepth {
		return nil, invalid("details nest deeper than %d", maxDetailsDepth)
	}
	switch delim {
	case '{':
		m := map[string]any{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, invalid("details are not JSON: %v", err)
			}
			key := kt.(string) // the decoder only yields strings as keys
			if _, dup := m[key]; dup {
				return nil, invalid("details repeat the key %q", key)
			}
			if m[key], err = decodeStrict(dec, depth+1); err != nil {
				return nil, err
			}
		}
		_, err = dec.Token() // '}'
		if err != nil {
			return nil, invalid("details are not JSON: %v", err)
		}
		return m, nil
	case '[':
		a := []any{}
		for dec.More() {
			v, err := decodeStrict(dec, depth+1)
			if err != nil {
				return nil, err
			}
			a = append(a, v)
		}
		if _, err := dec.Token(); err != nil { // ']'
			return nil, invalid("details are not JSON: %v", err)
		}
		return a, nil
	}
	return nil, invalid("details are not JSON: unexpected %v", delim)
}
