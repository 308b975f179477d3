package tgsp

import (
	"encoding/hex"
	"fmt"
	"regexp"
	"time"
	"unicode/utf8"
)

// ManifestSchema is the value of the manifest's schema field in format v1.
const ManifestSchema = "tgsp.manifest.v1"

// Suite names the algorithms of format v1; it is informational (the format
// version fixes them) but makes the manifest self-describing.
const Suite = "AES-256-GCM-STREAM-64K+SHA-256-SHARDS+MLKEM768-X25519-HPKE+MLDSA65-Ed25519-SHA512"

// Limits that keep a hostile package from making a reader allocate without
// bound. A manifest of maxManifestSize describes about 4 TiB of payload.
const (
	maxManifestSize = 64 << 20
	maxDocSize      = 1 << 20
	maxFiles        = 1 << 20
	maxPathLen      = 4096
	maxNameLen      = 255
)

// Hash is a SHA-256 (or HMAC-SHA-256) value, hex encoded in JSON.
type Hash [32]byte

// MarshalText encodes h as lowercase hex.
func (h Hash) MarshalText() ([]byte, error) { return []byte(hex.EncodeToString(h[:])), nil }

// UnmarshalText accepts exactly 64 lowercase hex digits.
func (h *Hash) UnmarshalText(b []byte) error {
	if len(b) != 64 {
		return fmt.Errorf("hash must be 64 hex digits, got %d characters", len(b))
	}
	for _, c := range b {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return fmt.Errorf("hash must be lowercase hex")
		}
	}
	_, err := hex.Decode(h[:], b)
	return err
}

func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// Entry types.
const (
	TypeFile = "file"
	TypeDir  = "dir"
)

// Manifest is the signed description of a package (SPEC.md §3).
type Manifest struct {
	Schema         string    `json:"schema"`
	Suite          string    `json:"suite"`
	Name           string    `json:"name"`
	Version        string    `json:"version"`
	CreatedAt      time.Time `json:"created_at"`
	ExpiresAt      time.Time `json:"expires_at"`
	PublisherKeyID string    `json:"publisher_key_id"`
	DeviceTypes    []string  `json:"device_types"`
	ChunkSize      int64     `json:"chunk_size"`
	ShardSize      int64     `json:"shard_size"`
	DEKCommitment  Hash      `json:"dek_commitment"`
	PayloadSize    int64     `json:"payload_size"`
	Files          []Entry   `json:"files"`
	Evidence       *DocRef   `json:"evidence,omitempty"`
	DPCert         *DocRef   `json:"dp_cert,omitempty"`
}

// Entry is one file or directory of the package.
type Entry struct {
	Path string `json:"path"`
	Type string `json:"type"`
	Mode uint32 `json:"mode"` // permission bits only
	Size int64  `json:"size"` // plaintext bytes; 0 for directories
	// Digest is HMAC-SHA-256 of the plaintext under a key derived from the
	// DEK: it identifies the content to DEK holders and reveals nothing to
	// anyone else. Absent for directories.
	Digest *Hash `json:"digest,omitempty"`
	// Shards are SHA-256 hashes of the stored ciphertext, ShardSize bytes
	// each (the last may be shorter). Absent for directories.
	Shards []Hash `json:"shards,omitempty"`
}

// DocRef binds an attached document (evidence.json, dp_cert.json).
type DocRef struct {
	Size   int64 `json:"size"`
	SHA256 Hash  `json:"sha256"`
}

var (
	nameRE       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	deviceTypeRE = regexp.MustCompile(`^(\*|[a-z0-9][a-z0-9._-]{0,63})$`)
	keyIDRE      = regexp.MustCompile(`^[0-9a-f]{32}$`)
)

// AnyDeviceType in DeviceTypes means the package targets every device type.
const AnyDeviceType = "*"

// parseManifest decodes and validates a manifest. Unknown fields are errors,
// so a field added by a later format version is never silently ignored.
func parseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := decodeStrict(b, &m, -1); err != nil {
		return nil, malformed("manifest: %v", err)
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// validate checks every rule of SPEC.md §3 that can be checked without the
// payload.
func (m *Manifest) validate() error {
	switch {
	case m.Schema != ManifestSchema:
		return malformed("manifest schema %q, want %q", m.Schema, ManifestSchema)
	case m.Suite != Suite:
		return malformed("manifest suite %q is not the v1 suite", m.Suite)
	case !nameRE.MatchString(m.Name):
		return malformed("package name %q must match %s", m.Name, nameRE)
	case m.ChunkSize != ChunkSize:
		return malformed("chunk_size %d, want %d", m.ChunkSize, ChunkSize)
	case m.ShardSize != ShardSize:
		return malformed("shard_size %d, want %d", m.ShardSize, ShardSize)
	case !keyIDRE.MatchString(m.PublisherKeyID):
		return malformed("publisher_key_id must be 32 lowercase hex digits")
	case m.CreatedAt.IsZero() || m.ExpiresAt.IsZero():
		return malformed("created_at and expires_at are required")
	case !m.ExpiresAt.After(m.CreatedAt):
		return malformed("expires_at %s is not after created_at %s", m.ExpiresAt.Format(time.RFC3339), m.CreatedAt.Format(time.RFC3339))
	case len(m.DeviceTypes) == 0:
		return malformed("device_types is empty (use %q for any)", AnyDeviceType)
	case len(m.Files) > maxFiles:
		return malformed("%d entries exceed the limit of %d", len(m.Files), maxFiles)
	}
	if _, err := ParseVersion(m.Version); err != nil {
		return malformed("version: %v", err)
	}
	for _, d := range m.DeviceTypes {
		if !deviceTypeRE.MatchString(d) {
			return malformed("device type %q must match %s", d, deviceTypeRE)
		}
	}
	for _, d := range []*DocRef{m.Evidence, m.DPCert} {
		if d != nil && (d.Size <= 0 || d.Size > maxDocSize) {
			return malformed("attached document size %d out of range (1..%d)", d.Size, maxDocSize)
		}
	}
	isFile := make(map[string]bool, len(m.Files))
	var total int64
	for i, e := range m.Files {
		if err := ValidPath(e.Path); err != nil {
			return malformed("entry %d: %v", i, err)
		}
		if i > 0 && m.Files[i-1].Path >= e.Path {
			return malformed("entries not strictly sorted at %q", e.Path)
		}
		if e.Mode > 0o777 {
			return malformed("entry %s: mode %o has bits beyond permissions", e.Path, e.Mode)
		}
		for p := parentOf(e.Path); p != ""; p = parentOf(p) {
			if isFile[p] {
				return malformed("entry %s is inside file %s", e.Path, p)
			}
		}
		switch e.Type {
		case TypeDir:
			if e.Size != 0 || e.Digest != nil || len(e.Shards) != 0 {
				return malformed("directory %s has size, digest or shards", e.Path)
			}
		case TypeFile:
			isFile[e.Path] = true
			if e.Size < 0 || e.Size > maxPayloadSize {
				return malformed("file %s: size %d out of range", e.Path, e.Size)
			}
			if e.Digest == nil {
				return malformed("file %s has no digest", e.Path)
			}
			if int64(len(e.Shards)) != shardCount(e.Size) {
				return malformed("file %s: %d shard hashes, want %d", e.Path, len(e.Shards), shardCount(e.Size))
			}
			total += cipherSize(e.Size)
			if total > maxPayloadSize {
				return malformed("payload larger than %d bytes", int64(maxPayloadSize))
			}
		default:
			return malformed("entry %s: unknown type %q", e.Path, e.Type)
		}
	}
	if total != m.PayloadSize {
		return malformed("payload_size %d, but the files need %d", m.PayloadSize, total)
	}
	return nil
}

// maxPayloadSize keeps every offset computation far from int64 overflow.
const maxPayloadSize = 1 << 56

func parentOf(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[:i]
		}
	}
	return ""
}

// ValidPath reports whether p may name an entry: a relative, slash-separated
// path of non-empty components, none of them "." or "..", without control
// characters or backslashes, valid UTF-8, at most 4096 bytes with components
// of at most 255. Such a path cannot escape the directory it is joined to.
func ValidPath(p string) error {
	if p == "" {
		return fmt.Errorf("%w: empty path", ErrUnsafePath)
	}
	if len(p) > maxPathLen {
		return fmt.Errorf("%w: path longer than %d bytes", ErrUnsafePath, maxPathLen)
	}
	if !utf8.ValidString(p) {
		return fmt.Errorf("%w: path %q is not valid UTF-8", ErrUnsafePath, p)
	}
	start := 0
	for i := 0; i <= len(p); i++ {
		if i < len(p) {
			c := p[i]
			if c < 0x20 || c == 0x7f || c == '\\' {
				return fmt.Errorf("%w: path %q contains a control character or backslash", ErrUnsafePath, p)
			}
			if c != '/' {
				continue
			}
		}
		comp := p[start:i]
		switch {
		case comp == "" && start == 0:
			return fmt.Errorf("%w: path %q is absolute", ErrUnsafePath, p)
		case comp == "":
			return fmt.Errorf("%w: path %q has an empty component", ErrUnsafePath, p)
		case comp == "." || comp == "..":
			return fmt.Errorf("%w: path %q contains %q", ErrUnsafePath, p, comp)
		case len(comp) > maxNameLen:
			return fmt.Errorf("%w: path %q has a component longer than %d bytes", ErrUnsafePath, p, maxNameLen)
		}
		start = i + 1
	}
	return nil
}

// TargetsDevice reports whether the package is meant for deviceType.
func (m *Manifest) TargetsDevice(deviceType string) bool {
	for _, d := range m.DeviceTypes {
		if d == AnyDeviceType || d == deviceType {
			return true
		}
	}
	return false
}

// Lookup returns the index of the entry with path p, or -1.
func (m *Manifest) Lookup(p string) int {
	lo, hi := 0, len(m.Files)
	for lo < hi {
		mid := (lo + hi) / 2
		if m.Files[mid].Path < p {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo < len(m.Files) && m.Files[lo].Path == p {
		return lo
	}
	return -1
}
