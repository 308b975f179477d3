package install

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/tensorguard/tensorguardflow/internal/wire"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// load decrypts the convention files and the model into memory and hands
// the model to the runtime. Plaintext exists only in the returned buffers.
func (in *Installer) load(pkg *tgsp.Package, dek *tgsp.DEK, slot *Slot) (*loadedModel, *SelfTest, error) {
	specBytes, err := readPlain(pkg, dek, ModelSpecPath, maxSpecSize)
	if err != nil {
		return nil, nil, err
	}
	spec, err := ParseModelSpec(specBytes)
	if err != nil {
		return nil, nil, refuse(wire.JobReasonMalformed, "%v", err)
	}
	need := append([]string{spec.Model}, spec.Files...)
	var total int64
	for _, p := range append(need, spec.SelfTest) {
		i := pkg.Manifest.Lookup(p)
		if i < 0 || pkg.Manifest.Files[i].Type != tgsp.TypeFile {
			return nil, nil, refuse(wire.JobReasonMalformed, "%s names %s, which is not a file of the package", ModelSpecPath, p)
		}
		total += pkg.Manifest.Files[i].Size
	}
	if total > in.cfg.MaxModelBytes {
		return nil, nil, refuse(wire.JobReasonActivation, "the model needs %d bytes of memory; this device allows %d (install.max_model_bytes)", total, in.cfg.MaxModelBytes)
	}
	stBytes, err := readPlain(pkg, dek, spec.SelfTest, maxSelfTestSize)
	if err != nil {
		return nil, nil, err
	}
	st, err := ParseSelfTest(stBytes, spec)
	if err != nil {
		return nil, nil, refuse(wire.JobReasonMalformed, "%v", err)
	}
	if in.cfg.Runtime == nil {
		return nil, nil, fail(wire.JobReasonActivation, "no model runtime is configured on this agent")
	}
	files := make(map[string][]byte, len(need))
	for _, p := range need {
		if files[p], err = readPlain(pkg, dek, p, in.cfg.MaxModelBytes); err != nil {
			return nil, nil, err
		}
	}
	meta := ModelMeta{Name: slot.Name, Version: slot.Version, Runtime: spec.Runtime, Model: spec.Model, Inputs: spec.Inputs, Outputs: spec.Outputs}
	m, err := in.cfg.Runtime.Load(files, meta)
	if err != nil {
		return nil, nil, fail(wire.JobReasonActivation, "load %s with %s: %v", spec.Model, spec.Runtime, err)
	}
	return &loadedModel{slot: *slot, model: m}, st, nil
}

// readPlain decrypts one file of the package into memory, proving it whole
// (every chunk, shard hash and the plaintext digest) before returning it.
func readPlain(pkg *tgsp.Package, dek *tgsp.DEK, path string, limit int64) ([]byte, error) {
	i := pkg.Manifest.Lookup(path)
	if i < 0 || pkg.Manifest.Files[i].Type != tgsp.TypeFile {
		return nil, refuse(wire.JobReasonMalformed, "%s is missing from the package", path)
	}
	size := pkg.Manifest.Files[i].Size
	if size > limit {
		return nil, refuse(wire.JobReasonMalformed, "%s is %d bytes; at most %d are accepted", path, size, limit)
	}
	r, err := pkg.OpenFile(dek, path)
	if err == nil {
		buf := make([]byte, size)
		if _, err = io.ReadFull(r, buf); err == nil {
			var one [1]byte
			// Only io.EOF proves the file whole (digest checked).
			if n, eof := io.ReadFull(r, one[:]); n != 0 || !errors.Is(eof, io.EOF) {
				err = fmt.Errorf("%s: after %d bytes: %w", path, size, eof)
			} else {
				return buf, nil
			}
		}
	}
	if errors.Is(err, tgsp.ErrDecrypt) || errors.Is(err, tgsp.ErrHashMismatch) {
		return nil, refuse(wire.JobReasonSignature, "decrypt %s: %v", path, err)
	}
	return nil, refuse(wire.JobReasonInternal, "decrypt %s: %v", path, err)
}

// loadSlot loads an installed slot again: the stored package, verified
// against the publisher key and time recorded at its install, opened with
// the stored grant.
func (in *Installer) loadSlot(ctx context.Context, s *Slot) (*loadedModel, *SelfTest, error) {
	pub, err := tgsp.ParseSignerPublicKey(s.Publisher)
	if err != nil {
		return nil, nil, refuse(wire.JobReasonInternal, "slot publisher key: %v", err)
	}
	if s.Path != filepath.Base(s.Path) || !strings.HasSuffix(s.Path, ".tgsp") {
		return nil, nil, refuse(wire.JobReasonInternal, "slot path %q is not a package file name", s.Path)
	}
	pkg, f, err := in.openVerified(ctx, filepath.Join(in.cfg.PackageDir, s.Path), []*tgsp.SignerPublicKey{pub}, s.VerifiedAt)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	if in.cfg.Keys == nil {
		return nil, nil, refuse(wire.JobReasonKeyGrant, "this agent has no device key to open key grants")
	}
	dek, err := in.cfg.Keys.OpenGrant(pkg, s.Grant)
	if err != nil {
		return nil, nil, refuse(wire.JobReasonKeyGrant, "open the slot's key grant: %v", err)
	}
	return in.load(pkg, dek, s)
}
