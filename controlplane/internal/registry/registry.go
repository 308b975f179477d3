package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/kek"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// Defaults.
const (
	// DefaultMaxPackageSize bounds one pushed package.
	DefaultMaxPackageSize int64 = 4 << 30
	// DefaultAttestationInterval is the attestation interval assumed for
	// fleets that set none, when Options leaves it unset.
	DefaultAttestationInterval = time.Minute
	// stagingMaxAge is how old an abandoned upload in the staging
	// directory must be before New removes it (an upload in progress on
	// another replica sharing the directory is younger).
	stagingMaxAge = 24 * time.Hour
)

// Sentinel errors. Push, Delete and GrantKey wrap them with a message that
// names what was wrong with the request; callers map them with errors.Is.
var (
	// ErrTooLarge: the pushed body is larger than Options.MaxPackageSize.
	ErrTooLarge = errors.New("package too large")
	// ErrUpload: reading the pushed body failed (the client went away or
	// sent a malformed chunked body).
	ErrUpload = errors.New("upload interrupted")
	// ErrInvalidPackage: not a well-formed TGSP package, a bad signature
	// or hash (tampered), or a recipient stanza for the control plane that
	// does not open to the signed key. The message carries tgsp's reason.
	ErrInvalidPackage = errors.New("invalid package")
	// ErrUnknownPublisher: signed by a key the tenant has not pinned.
	ErrUnknownPublisher = errors.New("unknown publisher")
	// ErrNotRecipient: the package has no recipient stanza for the
	// control plane's key, so the control plane could never release it.
	ErrNotRecipient = errors.New("not packed for this control plane")
	// ErrExpired: the package's signed expiry has passed.
	ErrExpired = errors.New("package expired")
	// ErrConflict: the name and version are taken by other content.
	ErrConflict = errors.New("package version conflict")
	// ErrNotFound: no such package (or publisher) in the tenant.
	ErrNotFound = errors.New("not found")
	// ErrInUse: the package is referenced (by a rollout) and cannot be
	// deleted.
	ErrInUse = errors.New("package in use")
)

// Sealer seals and opens tenant secrets under the tenant's data key;
// *kek.Keyring (ca.Authority.Keyring) is one.
type Sealer interface {
	Seal(ctx context.Context, tenant string, plaintext, aad []byte) ([]byte, error)
	Open(ctx context.Context, tenant string, envelope, aad []byte) ([]byte, error)
}

var _ Sealer = (*kek.Keyring)(nil)

// InUseFunc reports what still references tenant's package, inside the
// transaction that would delete it: "" when nothing does. The rollout
// engine supplies one (its tables also reference packages by foreign key,
// which the delete turns into ErrInUse as well).
type InUseFunc func(ctx context.Context, tx *store.Tx, tenant, packageID string) (string, error)

// Options configures New. Store, Keys, Blobs and StagingDir are required.
type Options struct {
	Store *store.Store
	// Keys seals the control plane's recipient private keys under the
	// tenant data keys (ca.Authority.Keyring()).
	Keys  Sealer
	Blobs BlobStore
	// StagingDir receives uploads while they are verified; on the file
	// system of a LocalBlobs directory (LocalBlobs.StagingDir) Put is a
	// rename.
	StagingDir string
	// MaxPackageSize bounds one package; default DefaultMaxPackageSize.
	MaxPackageSize int64
	// VerifyWorkers is how many cores verify a pushed package's hashes
	// (GOMAXPROCS when 0).
	VerifyWorkers int
	// Authorizer decides which packages a device may get keys for; default
	// DeviceFleetAuthorizer (see its doc for what the rollout engine adds).
	Authorizer GrantAuthorizer
	// AttestationInterval is the control plane's default attestation
	// interval (attestation.interval), for fleets that set none: a trusted
	// verdict older than two intervals is not fresh enough for a key
	// grant. Default DefaultAttestationInterval.
	AttestationInterval time.Duration
	// InUse, if set, is asked before a package is deleted.
	InUse  InUseFunc
	Now    func() time.Time
	Logger *slog.Logger
}

// Registry is the control plane's package registry and key custody. It is
// safe for concurrent use.
type Registry struct {
	st         *store.Store
	keys       Sealer
	blobs      BlobStore
	staging    string
	max        int64
	workers    int
	authorizer GrantAuthorizer
	interval   time.Duration
	inUse      InUseFunc
	now        func() time.Time
	log        *slog.Logger

	recipients  *sealedKeys[*tgsp.RecipientPrivateKey]
	trainerKeys *sealedKeys[*tgsp.SignerPrivateKey]

	commitMu sync.Mutex // held while a blob and its record are stored or deleted
}

// New checks opts and returns a Registry. It removes uploads abandoned in
// the staging directory more than a day ago.
func New(opts Options) (*Registry, error) {
	if opts.Store == nil || opts.Keys == nil || opts.Blobs == nil || opts.StagingDir == "" {
		return nil, errors.New("registry: store, keys, blobs and staging dir are required")
	}
	if opts.MaxPackageSize <= 0 {
		opts.MaxPackageSize = DefaultMaxPackageSize
	}
	if opts.AttestationInterval <= 0 {
		opts.AttestationInterval = DefaultAttestationInterval
	}
	if opts.Authorizer == nil {
		opts.Authorizer = DeviceFleetAuthorizer{Store: opts.Store}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if err := os.MkdirAll(opts.StagingDir, 0o700); err != nil {
		return nil, fmt.Errorf("registry: staging dir: %w", err)
	}
	r := &Registry{
		st: opts.Store, keys: opts.Keys, blobs: opts.Blobs, staging: opts.StagingDir, max: opts.MaxPackageSize,
		workers: opts.VerifyWorkers, authorizer: opts.Authorizer, interval: opts.AttestationInterval,
		inUse: opts.InUse, now: opts.Now, log: opts.Logger,
		recipients: newRecipientKeys(opts.Store), trainerKeys: newTrainerKeys(opts.Store),
	}
	r.sweepStaging()
	return r, nil
}

// MaxPackageSize is the largest package Push accepts.
func (r *Registry) MaxPackageSize() int64 { return r.max }

func (r *Registry) sweepStaging() {
	entries, err := os.ReadDir(r.staging)
	if err != nil {
		r.log.Warn("list staging dir", "dir", r.staging, "error", err)
		return
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() || !strings.HasPrefix(e.Name(), stagingPrefix) || r.now().Sub(fi.ModTime()) < stagingMaxAge {
			continue
		}
		if err := os.Remove(filepath.Join(r.staging, e.Name())); err == nil {
			r.log.Info("removed an abandoned upload", "file", e.Name())
		}
	}
}

const stagingPrefix = "push-"

// upload is a pushed package staged and verified, not yet stored.
type upload struct {
	path string
	pkg  store.Package
}

func (u *upload) discard() {
	if u.path != "" {
		_ = os.Remove(u.path)
	}
}

// Push receives a package from body (streamed to the staging directory,
// never held in memory), verifies it against tenant's publishers (the
// signature and every hash), checks that the control plane's recipient
// key opens its DEK and that it has not expired, and stores it: the blob
// under the SHA-256 of the file, the record through record's transaction
// (the caller's audit entry), in that order, so a record always has its
// blob.
//
// Pushing the bytes of a package that is already stored returns it with
// created false and records nothing; another package with the same name
// and version is ErrConflict.
func (r *Registry) Push(ctx context.Context, tenant string, body io.Reader, record func(tx *store.Tx, p store.Package) error) (store.Package, bool, error) {
	up, err := r.receive(ctx, tenant, body)
	if err != nil {
		return store.Package{}, false, err
	}
	defer up.discard()
	pkg := up.pkg
	// Storing and deleting are serialised in this process, so a push of a
	// file being deleted here either finds it or stores it anew.
	r.commitMu.Lock()
	defer r.commitMu.Unlock()
	if existing, err := r.st.GetPackageByVersion(ctx, tenant, pkg.Name, pkg.Version); err == nil {
		return sameOrConflict(existing, pkg)
	} else if !errors.Is(err, store.ErrNotFound) {
		return store.Package{}, false, err
	}
	if err := r.blobs.Put(ctx, tenant, pkg.ID, up.path); err != nil {
		return store.Package{}, false, err
	}
	up.path = ""
	var created store.Package
	err = r.st.WithTx(ctx, func(tx *store.Tx) error {
		var err error
		if created, err = tx.CreatePackage(ctx, tenant, pkg); err != nil {
			return err
		}
		if record != nil {
			return record(tx, created)
		}
		return nil
	})
	if err == nil {
		r.log.Info("package pushed", "tenant", tenant, "package", pkg.ID, "name", pkg.Name, "version", pkg.Version, "size", pkg.Size)
		return created, true, nil
	}
	if errors.Is(err, store.ErrConflict) {
		// A concurrent push of the same version won.
		if existing, gerr := r.st.GetPackageByVersion(ctx, tenant, pkg.Name, pkg.Version); gerr == nil {
			p, c, cerr := sameOrConflict(existing, pkg)
			if cerr != nil {
				r.dropOrphan(ctx, tenant, pkg.ID)
			}
			return p, c, cerr
		}
	}
	r.dropOrphan(ctx, tenant, pkg.ID)
	return store.Package{}, false, err
}

func sameOrConflict(existing, pushed store.Package) (store.Package, bool, error) {
	if existing.ID == pushed.ID {
		return existing, false, nil
	}
	return store.Package{}, false, fmt.Errorf("%w: %s@%s is already in the registry with other content (id %s); a version is never replaced — publish a new version",
		ErrConflict, pushed.Name, pushed.Version, existing.ID)
}

// dropOrphan removes a stored blob that no record names.
func (r *Registry) dropOrphan(ctx context.Context, tenant, id string) {
	if _, err := r.st.GetPackage(ctx, tenant, id); !errors.Is(err, store.ErrNotFound) {
		return
	}
	if err := r.blobs.Delete(ctx, tenant, id); err != nil {
		r.log.Warn("orphaned package blob not removed", "tenant", tenant, "package", id, "error", err)
	}
}

// receive stages body and verifies it; see Push.
func (r *Registry) receive(ctx context.Context, tenant string, body io.Reader) (_ *upload, err error) {
	f, err := os.CreateTemp(r.staging, stagingPrefix+"*.tgsp")
	if err != nil {
		return nil, fmt.Errorf("stage upload: %w", err)
	}
	up := &upload{path: f.Name()}
	defer func() {
		f.Close()
		if err != nil {
			up.discard()
		}
	}()
	h := sha256.New()
	src := &readErrors{r: io.LimitReader(body, r.max+1)}
	n, err := io.Copy(io.MultiWriter(f, h), src)
	if src.err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUpload, src.err)
	} else if err != nil {
		return nil, fmt.Errorf("stage upload: %w", err)
	}
	if n > r.max {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrTooLarge, r.max)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("stage upload: %w", err)
	}
	p, err := tgsp.Open(f, n)
	if err != nil {
		return nil, packageError(err)
	}
	pubs, err := r.st.ListPublishers(ctx, tenant)
	if err != nil {
		return nil, err
	}
	trust := make([]*tgsp.SignerPublicKey, 0, len(pubs))
	for _, pub := range pubs {
		k, err := tgsp.ParseSignerPublicKeyBytes(pub.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("publisher %q: stored key: %w", pub.Name, err)
		}
		trust = append(trust, k)
	}
	if err := p.Verify(ctx, trust, r.now(), r.workers); err != nil {
		return nil, packageError(err)
	}
	priv, err := r.recipientKey(ctx, tenant)
	if err != nil {
		return nil, err
	}
	if _, err := p.UnwrapDEK(priv); err != nil {
		// The DEK is not kept: a grant unwraps it again when it needs it.
		return nil, packageError(err)
	}
	m := p.Manifest
	for name, doc := range map[string][]byte{"manifest": p.ManifestBytes, "dp_cert.json": p.DPCertJSON, "evidence.json": p.EvidenceJSON} {
		if !utf8.Valid(doc) {
			return nil, fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidPackage, name)
		}
	}
	up.pkg = store.Package{
		ID: hex.EncodeToString(h.Sum(nil)), Name: m.Name, Version: m.Version, SignedID: p.ID(), Size: n,
		PublisherKeyID: m.PublisherKeyID, Manifest: p.ManifestBytes, DPCert: p.DPCertJSON, Evidence: p.EvidenceJSON,
		ExpiresAt: m.ExpiresAt,
	}
	return up, nil
}

// readErrors remembers the error of the reader it wraps, to tell a broken
// upload from a failure to store it.
type readErrors struct {
	r   io.Reader
	err error
}

func (e *readErrors) Read(b []byte) (int, error) {
	n, err := e.r.Read(b)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// packageError maps tgsp's refusals to the registry's sentinels; I/O and
// context errors pass through.
func packageError(err error) error {
	switch {
	case errors.Is(err, tgsp.ErrUntrustedSigner):
		return fmt.Errorf("%w: %v; pin the signer first (tgctl publisher add NAME --key SIGNER.pub)", ErrUnknownPublisher, err)
	case errors.Is(err, tgsp.ErrExpired):
		return fmt.Errorf("%w: %v", ErrExpired, err)
	case errors.Is(err, tgsp.ErrNotRecipient):
		return fmt.Errorf("%w: %v; pack it with --recipient set to the key `tgctl package recipient` prints", ErrNotRecipient, err)
	case errors.Is(err, tgsp.ErrMalformed), errors.Is(err, tgsp.ErrBadSignature), errors.Is(err, tgsp.ErrHashMismatch),
		errors.Is(err, tgsp.ErrDecrypt), errors.Is(err, tgsp.ErrUnsafePath):
		return fmt.Errorf("%w: %v", ErrInvalidPackage, err)
	}
	return err
}

// reader is what *store.Store and *store.Tx share for reading the
// registry and device state.
type reader interface {
	GetPackage(ctx context.Context, tenant, id string) (store.Package, error)
	GetPackageByVersion(ctx context.Context, tenant, name, version string) (store.Package, error)
	GetDevice(ctx context.Context, tenant, id string) (store.Device, error)
	GetFleet(ctx context.Context, tenant, id string) (store.Fleet, error)
	GetAttestationState(ctx context.Context, tenant, device string) (store.AttestationState, error)
}

var (
	_ reader = (*store.Store)(nil)
	_ reader = (*store.Tx)(nil)
)

// Lookup finds tenant's package by reference: its id (64 hex digits) or
// NAME@VERSION. Unknown is ErrNotFound.
func (r *Registry) Lookup(ctx context.Context, tenant, ref string) (store.Package, error) {
	return lookup(ctx, r.st, tenant, ref)
}

func lookup(ctx context.Context, rd reader, tenant, ref string) (store.Package, error) {
	var p store.Package
	var err error
	if name, version, ok := strings.Cut(ref, "@"); ok {
		p, err = rd.GetPackageByVersion(ctx, tenant, name, version)
	} else if store.ValidPackageID(ref) {
		p, err = rd.GetPackage(ctx, tenant, ref)
	} else {
		return store.Package{}, fmt.Errorf("%w: package %q (want an id of 64 hex digits or NAME@VERSION)", ErrNotFound, ref)
	}
	if errors.Is(err, store.ErrNotFound) {
		return store.Package{}, fmt.Errorf("%w: package %q", ErrNotFound, ref)
	}
	return p, err
}

// OpenBlob returns tenant's package id and its file. The caller closes the
// blob.
func (r *Registry) OpenBlob(ctx context.Context, tenant, id string) (store.Package, Blob, error) {
	p, err := lookup(ctx, r.st, tenant, id)
	if err != nil {
		return store.Package{}, nil, err
	}
	b, err := r.blobs.Open(ctx, tenant, p.ID)
	if err != nil {
		return store.Package{}, nil, fmt.Errorf("package %s: %w", p.ID, err)
	}
	if b.Size() != p.Size {
		b.Close()
		return store.Package{}, nil, fmt.Errorf("package %s: the stored blob has %d bytes, the record %d", p.ID, b.Size(), p.Size)
	}
	return p, b, nil
}

// Delete removes tenant's package (by reference, see Lookup): the record,
// with record's audit entry in the same transaction, then the blob. A
// package still referenced is ErrInUse.
func (r *Registry) Delete(ctx context.Context, tenant, ref string, record func(tx *store.Tx, p store.Package) error) (store.Package, error) {
	r.commitMu.Lock()
	defer r.commitMu.Unlock()
	var p store.Package
	err := r.st.WithTx(ctx, func(tx *store.Tx) error {
		var err error
		if p, err = lookup(ctx, tx, tenant, ref); err != nil {
			return err
		}
		if r.inUse != nil {
			what, err := r.inUse(ctx, tx, tenant, p.ID)
			if err != nil {
				return err
			}
			if what != "" {
				return fmt.Errorf("%w: %s@%s is used by %s", ErrInUse, p.Name, p.Version, what)
			}
		}
		if err := tx.DeletePackage(ctx, tenant, p.ID); errors.Is(err, store.ErrConflict) {
			return fmt.Errorf("%w: %s@%s is still referenced (by a rollout)", ErrInUse, p.Name, p.Version)
		} else if err != nil {
			return err
		}
		if record != nil {
			return record(tx, p)
		}
		return nil
	})
	if err != nil {
		return store.Package{}, err
	}
	if err := r.blobs.Delete(ctx, tenant, p.ID); err != nil {
		r.log.Warn("package deleted but its blob was not removed", "tenant", tenant, "package", p.ID, "error", err)
	}
	return p, nil
}
