package policybundle

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"
)

// ErrRefused is wrapped by every error of Verify: the bytes are not a
// bundle signed by the pinned key (or not a bundle at all).
var ErrRefused = errors.New("policy bundle refused")

// Bundle is a verified, signed policy bundle.
type Bundle struct {
	// Revision, Tenant, Fleet and CreatedAt come from the signed manifest.
	Revision  int64
	Tenant    string
	Fleet     string
	CreatedAt time.Time
	// KeyID is the key that verified it.
	KeyID string
	// SHA256 is the lowercase hex SHA-256 of Raw.
	SHA256 string
	// Raw is the bundle as received.
	Raw []byte

	b bundle.Bundle
}

// Files returns the paths of the bundle's modules and data, without the
// leading slash.
func (b *Bundle) Files() []string {
	out := make([]string, 0, len(b.b.Modules)+1)
	for _, m := range b.b.Modules {
		out = append(out, cleanFile(m.Path))
	}
	return append(out, "data.json")
}

// Digest returns the lowercase hex SHA-256 of raw, the id a bundle is
// stored and compared by.
func Digest(raw []byte) string {
	h := sha256.Sum256(raw)
	return hex.EncodeToString(h[:])
}

func refused(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// Verify checks raw against key and returns the bundle. It refuses (with
// an error wrapping ErrRefused) a bundle that is too large, is not a
// gzipped tar of regular files with clean paths, holds anything but
// modules, one /data.json, /.manifest and /.signatures.json, has a file
// the signature does not cover or a covered file that is missing or
// different, is not signed by key, or whose manifest lacks a positive
// decimal revision or our metadata.
func Verify(raw []byte, key VerificationKey) (*Bundle, error) {
	if err := key.Check(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrRefused, err)
	}
	if len(raw) > MaxBundleSize {
		return nil, refused("%d bytes: at most %d", len(raw), MaxBundleSize)
	}
	files, err := untar(raw)
	if err != nil {
		return nil, err
	}
	vc := bundle.NewVerificationConfig(map[string]*bundle.KeyConfig{
		key.ID: {Key: key.PublicKeyPEM, Algorithm: Algorithm},
	}, key.ID, "", nil)
	b, err := readBundle(files, vc)
	if err != nil {
		return nil, refused("%v", err)
	}
	if len(b.Signatures.Signatures) != 1 {
		return nil, refused("not signed")
	}
	if len(b.WasmModules) > 0 || len(b.Wasm) > 0 || len(b.PlanModules) > 0 || len(b.Patch.Data) > 0 {
		return nil, refused("wasm, plan and delta bundles are not accepted")
	}
	out := &Bundle{KeyID: key.ID, SHA256: Digest(raw), Raw: raw, b: b}
	rev, err := strconv.ParseInt(b.Manifest.Revision, 10, 64)
	if err != nil || rev <= 0 || strconv.FormatInt(rev, 10) != b.Manifest.Revision {
		return nil, refused("manifest revision %q is not a positive decimal integer", b.Manifest.Revision)
	}
	out.Revision = rev
	meta, _ := b.Manifest.Metadata[metadataKey].(map[string]any)
	out.Tenant, _ = meta["tenant"].(string)
	out.Fleet, _ = meta["fleet"].(string)
	if out.Tenant == "" || out.Fleet == "" {
		return nil, refused("manifest metadata names no tenant and fleet")
	}
	if s, _ := meta["created_at"].(string); s != "" {
		out.CreatedAt, _ = time.Parse(time.RFC3339, s)
	}
	return out, nil
}

// untar reads a gzipped tar strictly: regular files (and directories,
// skipped) only, clean unique paths, bounded sizes, and only the entries a
// signed bundle has.
func untar(raw []byte) ([]memFile, error) {
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil, refused("not gzip: %v", err)
	}
	tr := tar.NewReader(io.LimitReader(zr, MaxContentSize+64<<10))
	var files []memFile
	seen := map[string]bool{}
	total := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, refused("tar: %v", err)
		}
		name := strings.TrimPrefix(h.Name, "/")
		switch h.Typeflag {
		case tar.TypeDir:
			continue
		case tar.TypeReg:
		default:
			return nil, refused("entry %q: only regular files are accepted", h.Name)
		}
		if err := checkBundlePath(name); err != nil {
			return nil, refused("entry %q: %v", h.Name, err)
		}
		if seen[name] {
			return nil, refused("entry %q appears twice", h.Name)
		}
		seen[name] = true
		if len(files) >= MaxFiles+3 {
			return nil, refused("more than %d entries", MaxFiles+3)
		}
		if h.Size < 0 || h.Size > MaxFileSize {
			return nil, refused("entry %q: %d bytes, at most %d", h.Name, h.Size, MaxFileSize)
		}
		total += int(h.Size)
		if total > MaxContentSize {
			return nil, refused("more than %d bytes decompressed", MaxContentSize)
		}
		data := make([]byte, h.Size)
		if _, err := io.ReadFull(tr, data); err != nil {
			return nil, refused("entry %q: %v", h.Name, err)
		}
		files = append(files, memFile{name: name, data: data})
	}
	return files, nil
}

// checkBundlePath accepts the entries of a signed bundle.
func checkBundlePath(name string) error {
	switch name {
	case ".manifest", ".signatures.json", "data.json":
		return nil
	}
	if err := checkPath(name); err != nil {
		return err
	}
	if !strings.HasSuffix(path.Base(name), ".rego") {
		return errors.New("not a module, /data.json, /.manifest or /.signatures.json")
	}
	return nil
}
