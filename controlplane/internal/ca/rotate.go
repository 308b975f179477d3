package ca

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tensorguard/tensorguardflow/internal/kek"
)

// RewrapPlatformKey prepares the platform CA key wrapped under next
// (read with old, or with next when a previous rotation already got that
// far) and returns the path it wrote and commit, which moves it into
// place. Nothing changes for the running key until commit.
func RewrapPlatformKey(ctx context.Context, old, next kek.Provider, dataDir string) (staged string, commit func() error, err error) {
	path := filepath.Join(dataDir, PlatformKeyFile)
	wrapped, err := os.ReadFile(path)
	if err != nil {
		return "", nil, fmt.Errorf("platform CA key: %w", err)
	}
	pkcs8, err := old.UnwrapKey(ctx, wrapped, platformKeyAAD)
	if err != nil {
		if _, nerr := next.UnwrapKey(ctx, wrapped, platformKeyAAD); nerr == nil {
			return "", func() error { return nil }, nil // already under next
		}
		return "", nil, fmt.Errorf("unwrap the platform CA key with the current KEK: %w", err)
	}
	rewrapped, err := next.WrapKey(ctx, pkcs8, platformKeyAAD)
	clear(pkcs8)
	if err != nil {
		return "", nil, err
	}
	staged = path + ".next"
	_ = os.Remove(staged)
	if err := writeFileExcl(staged, rewrapped, 0o600); err != nil {
		return "", nil, err
	}
	return staged, func() error {
		if err := os.Rename(staged, path); err != nil {
			return err
		}
		d, err := os.Open(filepath.Dir(path))
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}, nil
}

// RewrapTenantDEK returns tenant's data key wrapped under next, and false
// when it already is (a previous rotation got that far).
func RewrapTenantDEK(ctx context.Context, old, next kek.Provider, tenant string, wrapped []byte) ([]byte, bool, error) {
	out, err := kek.RewrapTenantKey(ctx, old, next, tenant, 1, wrapped)
	if err == nil {
		return out, true, nil
	}
	if _, nerr := kek.RewrapTenantKey(ctx, next, next, tenant, 1, wrapped); nerr == nil {
		return wrapped, false, nil
	}
	return nil, false, errors.Join(fmt.Errorf("tenant %s: unwrap its data key with the current KEK", tenant), err)
}
