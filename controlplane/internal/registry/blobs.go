package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

// ErrBlobNotFound is returned by a BlobStore for a blob it does not hold.
var ErrBlobNotFound = errors.New("blob not found")

// BlobStore keeps package files by content address, per tenant (DESIGN.md
// §7: local files by default, an S3-compatible store later). A blob never
// changes once stored: id is the SHA-256 of its bytes.
type BlobStore interface {
	// Put stores the file at path — a verified upload in the registry's
	// staging directory — as tenant's blob id, taking the file over (the
	// local store renames it). Putting an id that exists replaces it with
	// the same bytes.
	Put(ctx context.Context, tenant, id, path string) error
	// Open returns tenant's blob id for reading, or ErrBlobNotFound.
	Open(ctx context.Context, tenant, id string) (Blob, error)
	// Delete removes tenant's blob id; a missing blob is not an error.
	Delete(ctx context.Context, tenant, id string) error
}

// Blob is one stored package file, open for random-access reads (tgsp.Open,
// HTTP range requests). Close it when done.
type Blob interface {
	io.ReaderAt
	io.Closer
	Size() int64
	ModTime() time.Time
}

// LocalBlobs is a BlobStore in a local directory:
//
//	<dir>/<tenant>/sha256/<first two hex digits>/<id>   blobs, mode 0600
//	<dir>/.staging/                                     uploads being verified
//
// Directories are 0700. Put renames the staged file into place and syncs
// the directory, so a blob is either complete or absent after a crash.
// Several control-plane replicas may share the directory (a network file
// system); every name is derived from the content, so they never disagree.
type LocalBlobs struct {
	dir string
}

var _ BlobStore = (*LocalBlobs)(nil)

// NewLocalBlobs opens (creating) a blob directory.
func NewLocalBlobs(dir string) (*LocalBlobs, error) {
	if dir == "" {
		return nil, errors.New("blob store: empty directory")
	}
	if err := os.MkdirAll(filepath.Join(dir, stagingName), 0o700); err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	return &LocalBlobs{dir: dir}, nil
}

const stagingName = ".staging"

// StagingDir is where the registry should stage uploads: inside the blob
// directory, so that Put is a rename on one file system.
func (l *LocalBlobs) StagingDir() string { return filepath.Join(l.dir, stagingName) }

// path returns the file of tenant's blob id, refusing anything that is not
// a tenant slug and a hex SHA-256 (so no name can leave the directory).
func (l *LocalBlobs) path(tenant, id string) (string, error) {
	if !store.ValidTenantID(tenant) || !store.ValidPackageID(id) {
		return "", fmt.Errorf("blob store: invalid tenant %q or blob id %q", tenant, id)
	}
	return filepath.Join(l.dir, tenant, "sha256", id[:2], id), nil
}

// Put implements BlobStore.
func (l *LocalBlobs) Put(_ context.Context, tenant, id, src string) error {
	dst, err := l.path(tenant, id)
	if err != nil {
		return err
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("blob store: %w", err)
	}
	if err := os.Chmod(src, 0o600); err != nil {
		return fmt.Errorf("blob store: %w", err)
	}
	if err := os.Rename(src, dst); err != nil {
		return fmt.Errorf("blob store: store %s: %w", id, err)
	}
	return syncDir(dir)
}

// Open implements BlobStore.
func (l *LocalBlobs) Open(_ context.Context, tenant, id string) (Blob, error) {
	p, err := l.path(tenant, id)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrBlobNotFound, id)
	} else if err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("blob store: %w", err)
	}
	return &fileBlob{File: f, size: fi.Size(), mod: fi.ModTime()}, nil
}

// Delete implements BlobStore.
func (l *LocalBlobs) Delete(_ context.Context, tenant, id string) error {
	p, err := l.path(tenant, id)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("blob store: delete %s: %w", id, err)
	}
	return nil
}

type fileBlob struct {
	*os.File
	size int64
	mod  time.Time
}

func (b *fileBlob) Size() int64        { return b.size }
func (b *fileBlob) ModTime() time.Time { return b.mod }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("blob store: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("blob store: sync %s: %w", dir, err)
	}
	return nil
}
