package store

import (
	"context"
	"fmt"
	"time"
)

// TenantKey is a key pair the control plane holds for one tenant (at most
// one per tenant and purpose): the public key, its key id, and the private
// key sealed under the tenant's data key (opaque here). RecipientKey and
// PolicySigningKey are its two purposes, each in a table of its own.
type TenantKey struct {
	Tenant     string
	KeyID      string
	PublicKey  []byte
	WrappedKey []byte
	CreatedAt  time.Time
}

const tenantKeyCols = `tenant_id, key_id, public_key, wrapped_key, created_at`

func scanTenantKey(sc scanner) (TenantKey, error) {
	var k TenantKey
	var created int64
	if err := sc.Scan(&k.Tenant, &k.KeyID, &k.PublicKey, &k.WrappedKey, &created); err != nil {
		return TenantKey{}, mapErr(err)
	}
	k.CreatedAt = fromMicros(created)
	return k, nil
}

// ensureTenantKey stores k in table (recipient_keys or
// policy_signing_keys: one row per tenant) unless tenant already has a
// row, and returns the row the tenant has afterwards; created reports
// whether it is k. what names the key in errors. The caller validated k.
func (o *ops) ensureTenantKey(ctx context.Context, table, what, tenant string, k TenantKey) (TenantKey, bool, error) {
	if len(k.PublicKey) == 0 || len(k.WrappedKey) == 0 {
		return TenantKey{}, false, fmt.Errorf("%w: %s needs a public key and a wrapped private key", ErrInvalid, what)
	}
	var out TenantKey
	var created bool
	err := o.inTx(ctx, func(o *ops) error {
		res, err := o.exec(ctx, `INSERT INTO `+table+` (tenant_id, key_id, public_key, wrapped_key, created_at)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id) DO NOTHING`,
			tenant, k.KeyID, k.PublicKey, k.WrappedKey, micros(o.clock()))
		if err != nil {
			return mapInsertErr(err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		created = n == 1
		out, err = scanTenantKey(o.queryRowW(ctx, `SELECT `+tenantKeyCols+` FROM `+table+` WHERE tenant_id = ?`, tenant))
		return err
	})
	if err != nil {
		return TenantKey{}, false, fmt.Errorf("%s of tenant %s: %w", what, tenant, err)
	}
	return out, created, nil
}

// getTenantKey returns tenant's row of table; ErrNotFound before
// ensureTenantKey stored one.
func (o *ops) getTenantKey(ctx context.Context, table, what, tenant string) (TenantKey, error) {
	k, err := scanTenantKey(o.queryRow(ctx, `SELECT `+tenantKeyCols+` FROM `+table+` WHERE tenant_id = ?`, tenant))
	if err != nil {
		return TenantKey{}, fmt.Errorf("%s of tenant %s: %w", what, tenant, err)
	}
	return k, nil
}

// TrainerSigningKey is the key the trainer signs a tenant's exported
// packages with (tgsp signer key; id is tgsp's signer key id).
type TrainerSigningKey = TenantKey

// EnsureTrainerSigningKey stores k as tenant's trainer signing key unless
// the tenant already has one, and returns the one it has afterwards.
func (o *ops) EnsureTrainerSigningKey(ctx context.Context, tenant string, k TrainerSigningKey) (TrainerSigningKey, bool, error) {
	if !ValidKeyID(k.KeyID) {
		return TrainerSigningKey{}, false, fmt.Errorf("%w: trainer signing key id %q is not 32 lowercase hex digits", ErrInvalid, k.KeyID)
	}
	return o.ensureTenantKey(ctx, "trainer_signing_keys", "trainer signing key", tenant, k)
}

// GetTrainerSigningKey returns tenant's trainer signing key; ErrNotFound
// until EnsureTrainerSigningKey stored one.
func (o *ops) GetTrainerSigningKey(ctx context.Context, tenant string) (TrainerSigningKey, error) {
	return o.getTenantKey(ctx, "trainer_signing_keys", "trainer signing key", tenant)
}
