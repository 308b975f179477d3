package rollout

import (
	"context"
	"fmt"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// PackagePath is the device route that serves a package's blob (the
// registry's GET /api/v1/device/packages/{id}); a job's PackageRef.URL is
// PackagePath + id.
const PackagePath = "/api/v1/device/packages/"

// Packages is what the engine needs from the package registry: a package
// by name and version or by id, and the signer keys a tenant pins. An
// unknown package is an error wrapping store.ErrNotFound.
type Packages interface {
	ResolvePackage(ctx context.Context, tenant, name, version string) (wire.PackageRef, error)
	PackageByID(ctx context.Context, tenant, id string) (wire.PackageRef, error)
	Publishers(ctx context.Context, tenant string) ([][]byte, error)
}

// StorePackages reads the registry's records (store.Package,
// store.Publisher) from the database.
type StorePackages struct {
	Store *store.Store
}

var _ Packages = StorePackages{}

func packageRef(p store.Package) wire.PackageRef {
	return wire.PackageRef{ID: p.ID, Name: p.Name, Version: p.Version, Size: p.Size, URL: PackagePath + p.ID}
}

// ResolvePackage implements Packages.
func (s StorePackages) ResolvePackage(ctx context.Context, tenant, name, version string) (wire.PackageRef, error) {
	p, err := s.Store.GetPackageByVersion(ctx, tenant, name, version)
	if err != nil {
		return wire.PackageRef{}, err
	}
	return packageRef(p), nil
}

// PackageByID implements Packages.
func (s StorePackages) PackageByID(ctx context.Context, tenant, id string) (wire.PackageRef, error) {
	if !store.ValidPackageID(id) {
		return wire.PackageRef{}, fmt.Errorf("package %q: %w", id, store.ErrNotFound)
	}
	p, err := s.Store.GetPackage(ctx, tenant, id)
	if err != nil {
		return wire.PackageRef{}, err
	}
	return packageRef(p), nil
}

// Publishers implements Packages.
func (s StorePackages) Publishers(ctx context.Context, tenant string) ([][]byte, error) {
	pubs, err := s.Store.ListPublishers(ctx, tenant)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(pubs))
	for _, p := range pubs {
		out = append(out, p.PublicKey)
	}
	return out, nil
}
