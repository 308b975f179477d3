package store

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"time"
)

// The package registry (issue 5): publishers, the control plane's per-tenant
// recipient key, and package records. The package files themselves live in
// a blob store (controlplane/internal/registry); the database holds what
// describes them.

var (
	keyIDRe     = regexp.MustCompile(`^[0-9a-f]{32}$`)
	packageIDRe = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// ValidKeyID reports whether s has the form of a tgsp key id: 32 lowercase
// hex digits.
func ValidKeyID(s string) bool { return keyIDRe.MatchString(s) }

// ValidPackageID reports whether s has the form of a package id: the
// lowercase hex SHA-256 of a package file.
func ValidPackageID(s string) bool { return packageIDRe.MatchString(s) }

// Publisher is a TGSP signer key a tenant trusts: packages pushed to the
// tenant must be signed by one of its publishers.
type Publisher struct {
	Tenant string
	Name   string
	// KeyID is the tgsp key id of PublicKey (32 lowercase hex digits).
	KeyID string
	// PublicKey is the tgsp signer public key body.
	PublicKey []byte
	CreatedAt time.Time
}

// CreatePublisher stores a publisher of tenant. A name or key id the tenant
// already has is ErrConflict.
func (o *ops) CreatePublisher(ctx context.Context, tenant string, p Publisher) (Publisher, error) {
	switch {
	case p.Name == "":
		return Publisher{}, fmt.Errorf("%w: publisher needs a name", ErrInvalid)
	case !ValidKeyID(p.KeyID):
		return Publisher{}, fmt.Errorf("%w: publisher key id %q is not 32 lowercase hex digits", ErrInvalid, p.KeyID)
	case len(p.PublicKey) == 0:
		return Publisher{}, fmt.Errorf("%w: publisher needs a public key", ErrInvalid)
	}
	p.Tenant, p.CreatedAt = tenant, o.clock()
	if _, err := o.exec(ctx, `INSERT INTO publishers (tenant_id, name, key_id, public_key, created_at) VALUES (?, ?, ?, ?, ?)`,
		tenant, p.Name, p.KeyID, p.PublicKey, micros(p.CreatedAt)); err != nil {
		return Publisher{}, fmt.Errorf("create publisher %q: %w", p.Name, mapInsertErr(err))
	}
	return p, nil
}

const publisherCols = `tenant_id, name, key_id, public_key, created_at`

func scanPublisher(sc scanner) (Publisher, error) {
	var p Publisher
	var created int64
	if err := sc.Scan(&p.Tenant, &p.Name, &p.KeyID, &p.PublicKey, &created); err != nil {
		return Publisher{}, mapErr(err)
	}
	p.CreatedAt = fromMicros(created)
	return p, nil
}

// GetPublisher returns tenant's publisher with this name.
func (o *ops) GetPublisher(ctx context.Context, tenant, name string) (Publisher, error) {
	p, err := scanPublisher(o.queryRow(ctx, `SELECT `+publisherCols+` FROM publishers WHERE tenant_id = ? AND name = ?`, tenant, name))
	if err != nil {
		return Publisher{}, fmt.Errorf("publisher %q: %w", name, err)
	}
	return p, nil
}

// GetPublisherByKeyID returns tenant's publisher whose key has this id.
func (o *ops) GetPublisherByKeyID(ctx context.Context, tenant, keyID string) (Publisher, error) {
	p, err := scanPublisher(o.queryRow(ctx, `SELECT `+publisherCols+` FROM publishers WHERE tenant_id = ? AND key_id = ?`, tenant, keyID))
	if err != nil {
		return Publisher{}, fmt.Errorf("publisher with key %s: %w", keyID, err)
	}
	return p, nil
}

// ListPublishers returns tenant's publishers by name.
func (o *ops) ListPublishers(ctx context.Context, tenant string) ([]Publisher, error) {
	return queryAll(ctx, o, scanPublisher, `SELECT `+publisherCols+` FROM publishers WHERE tenant_id = ? ORDER BY name`, tenant)
}

// DeletePublisher removes tenant's publisher with this name. Packages it
// signed stay in the registry, but nothing signed by it verifies any more
// (pushes and key grants are refused).
func (o *ops) DeletePublisher(ctx context.Context, tenant, name string) error {
	if err := o.execOne(ctx, `DELETE FROM publishers WHERE tenant_id = ? AND name = ?`, tenant, name); err != nil {
		return fmt.Errorf("delete publisher %q: %w", name, err)
	}
	return nil
}

// RecipientKey is the control plane's TGSP recipient key of one tenant:
// the public key body (tgsp.RecipientPublicKey.Bytes), its key id, and the
// private key sealed under the tenant's data key (opaque here).
type RecipientKey = TenantKey

// EnsureRecipientKey stores k as tenant's recipient key unless the tenant
// already has one, and returns the key the tenant has afterwards: k, or the
// one stored before (by another replica, say). created reports which.
func (o *ops) EnsureRecipientKey(ctx context.Context, tenant string, k RecipientKey) (RecipientKey, bool, error) {
	if !ValidKeyID(k.KeyID) {
		return RecipientKey{}, false, fmt.Errorf("%w: recipient key id %q is not 32 lowercase hex digits", ErrInvalid, k.KeyID)
	}
	return o.ensureTenantKey(ctx, "recipient_keys", "recipient key", tenant, k)
}

// GetRecipientKey returns tenant's recipient key; ErrNotFound until
// EnsureRecipientKey stored one.
func (o *ops) GetRecipientKey(ctx context.Context, tenant string) (RecipientKey, error) {
	return o.getTenantKey(ctx, "recipient_keys", "recipient key", tenant)
}

// Package is a TGSP package in a tenant's registry. The file itself is in
// the blob store under ID.
type Package struct {
	Tenant string
	// ID is the lowercase hex SHA-256 of the package file.
	ID      string
	Name    string
	Version string
	// SignedID is the TGSP package id, SHA-256(header || manifest), hex.
	SignedID       string
	Size           int64
	PublisherKeyID string
	// Manifest, DPCert and Evidence are the package's signed manifest and
	// attached documents, JSON byte for byte (DPCert and Evidence nil when
	// absent). ListPackages leaves all three nil.
	Manifest  []byte
	DPCert    []byte
	Evidence  []byte
	ExpiresAt time.Time
	// CreatedAt is when the package was pushed.
	CreatedAt time.Time
}

// CreatePackage records a pushed package of tenant. An id, or a name and
// version, the tenant already has is ErrConflict.
func (o *ops) CreatePackage(ctx context.Context, tenant string, p Package) (Package, error) {
	switch {
	case !ValidPackageID(p.ID):
		return Package{}, fmt.Errorf("%w: package id %q is not a lowercase hex SHA-256", ErrInvalid, p.ID)
	case p.Name == "" || p.Version == "" || p.SignedID == "" || !ValidKeyID(p.PublisherKeyID):
		return Package{}, fmt.Errorf("%w: package needs a name, a version, a signed id and a publisher key id", ErrInvalid)
	case p.Size <= 0 || len(p.Manifest) == 0 || p.ExpiresAt.IsZero():
		return Package{}, fmt.Errorf("%w: package needs a size, a manifest and an expiry", ErrInvalid)
	}
	p.Tenant, p.CreatedAt = tenant, o.clock()
	p.ExpiresAt = p.ExpiresAt.UTC().Truncate(time.Microsecond)
	if _, err := o.exec(ctx, `INSERT INTO packages (tenant_id, id, name, version, signed_id, size, publisher_key_id,
		manifest, dp_cert, evidence, expires_at, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		tenant, p.ID, p.Name, p.Version, p.SignedID, p.Size, p.PublisherKeyID,
		string(p.Manifest), nullDoc(p.DPCert), nullDoc(p.Evidence), micros(p.ExpiresAt), micros(p.CreatedAt)); err != nil {
		return Package{}, fmt.Errorf("create package %s@%s: %w", p.Name, p.Version, mapInsertErr(err))
	}
	return p, nil
}

func nullDoc(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

const (
	packageSummaryCols = `tenant_id, id, name, version, signed_id, size, publisher_key_id, expires_at, created_at`
	packageCols        = packageSummaryCols + `, manifest, dp_cert, evidence`
)

func scanPackageSummary(sc scanner) (Package, error) { return scanPackageRow(sc, false) }

func scanPackage(sc scanner) (Package, error) { return scanPackageRow(sc, true) }

func scanPackageRow(sc scanner, full bool) (Package, error) {
	var p Package
	var expires, created int64
	dest := []any{&p.Tenant, &p.ID, &p.Name, &p.Version, &p.SignedID, &p.Size, &p.PublisherKeyID, &expires, &created}
	var manifest string
	var dp, ev sql.NullString
	if full {
		dest = append(dest, &manifest, &dp, &ev)
	}
	if err := sc.Scan(dest...); err != nil {
		return Package{}, mapErr(err)
	}
	p.ExpiresAt, p.CreatedAt = fromMicros(expires), fromMicros(created)
	if full {
		p.Manifest = []byte(manifest)
		if dp.Valid {
			p.DPCert = []byte(dp.String)
		}
		if ev.Valid {
			p.Evidence = []byte(ev.String)
		}
	}
	return p, nil
}

// GetPackage returns tenant's package with this id, manifest and documents
// included.
func (o *ops) GetPackage(ctx context.Context, tenant, id string) (Package, error) {
	p, err := scanPackage(o.queryRow(ctx, `SELECT `+packageCols+` FROM packages WHERE tenant_id = ? AND id = ?`, tenant, id))
	if err != nil {
		return Package{}, fmt.Errorf("package %s: %w", id, err)
	}
	return p, nil
}

// GetPackageByVersion returns tenant's package with this name and version,
// manifest and documents included.
func (o *ops) GetPackageByVersion(ctx context.Context, tenant, name, version string) (Package, error) {
	p, err := scanPackage(o.queryRow(ctx, `SELECT `+packageCols+` FROM packages WHERE tenant_id = ? AND name = ? AND version = ?`,
		tenant, name, version))
	if err != nil {
		return Package{}, fmt.Errorf("package %s@%s: %w", name, version, err)
	}
	return p, nil
}

// PackageFilter narrows ListPackages; zero fields match everything.
type PackageFilter struct {
	Name string
}

// ListPackages returns tenant's packages matching f, by name and then by
// push time, without their manifests and documents.
func (o *ops) ListPackages(ctx context.Context, tenant string, f PackageFilter) ([]Package, error) {
	q, args := `SELECT `+packageSummaryCols+` FROM packages WHERE tenant_id = ?`, []any{tenant}
	if f.Name != "" {
		q, args = q+` AND name = ?`, append(args, f.Name)
	}
	return queryAll(ctx, o, scanPackageSummary, q+` ORDER BY name, created_at, id`, args...)
}

// DeletePackage removes tenant's package record. A package still referenced
// by other rows (a rollout) is ErrConflict.
func (o *ops) DeletePackage(ctx context.Context, tenant, id string) error {
	if err := o.execOne(ctx, `DELETE FROM packages WHERE tenant_id = ? AND id = ?`, tenant, id); err != nil {
		return fmt.Errorf("delete package %s: %w", id, err)
	}
	return nil
}
