package store

import (
	"context"
	"fmt"
	"regexp"
	"time"
)

// PolicySigningKey is a tenant's policy bundle signing key (migration
// 0006): the public key as PKIX DER and the PKCS #8 private key sealed
// under the tenant's data key (opaque here).
type PolicySigningKey = TenantKey

var policyKeyIDRe = regexp.MustCompile(`^tgpol-[0-9a-f]{32}$`)

// EnsurePolicySigningKey stores k as tenant's policy signing key unless the
// tenant already has one, and returns the key the tenant has afterwards: k,
// or the one stored before (by another replica, say). created reports
// which.
func (o *ops) EnsurePolicySigningKey(ctx context.Context, tenant string, k PolicySigningKey) (PolicySigningKey, bool, error) {
	if !policyKeyIDRe.MatchString(k.KeyID) {
		return PolicySigningKey{}, false, fmt.Errorf("%w: policy key id %q is not tgpol-<32 hex digits>", ErrInvalid, k.KeyID)
	}
	return o.ensureTenantKey(ctx, "policy_signing_keys", "policy signing key", tenant, k)
}

// GetPolicySigningKey returns tenant's policy signing key, or ErrNotFound
// before the first push.
func (o *ops) GetPolicySigningKey(ctx context.Context, tenant string) (PolicySigningKey, error) {
	return o.getTenantKey(ctx, "policy_signing_keys", "policy signing key", tenant)
}

// PolicyBundle is one signed policy bundle of a fleet. Bundle is empty when
// read without its bytes.
type PolicyBundle struct {
	Tenant    string
	FleetID   string
	Revision  int64
	SHA256    string
	Size      int64
	KeyID     string
	Bundle    []byte
	CreatedBy string
	CreatedAt time.Time
}

// NextPolicyRevision hands out the fleet's next policy revision: 1, 2, 3,
// … Revisions are never reused, also when the push that took one fails
// after its transaction (inside a Tx the number is taken only if the Tx
// commits). Concurrent calls for one fleet are serialised. An unknown fleet
// is ErrNotFound.
func (o *ops) NextPolicyRevision(ctx context.Context, tenant, fleet string) (int64, error) {
	var rev int64
	err := o.queryRowW(ctx, `INSERT INTO policy_heads (tenant_id, fleet_id, revision) VALUES (?, ?, 1)
		ON CONFLICT (tenant_id, fleet_id) DO UPDATE SET revision = policy_heads.revision + 1
		RETURNING revision`, tenant, fleet).Scan(&rev)
	if err != nil {
		return 0, fmt.Errorf("next policy revision of fleet %s: %w", fleet, mapInsertErr(err))
	}
	return rev, nil
}

// CreatePolicyBundle stores a signed bundle under its revision (from
// NextPolicyRevision). A revision stored before is ErrConflict.
func (o *ops) CreatePolicyBundle(ctx context.Context, tenant string, b PolicyBundle) (PolicyBundle, error) {
	switch {
	case b.Revision <= 0:
		return PolicyBundle{}, fmt.Errorf("%w: policy revision %d", ErrInvalid, b.Revision)
	case len(b.Bundle) == 0 || b.SHA256 == "" || b.KeyID == "" || b.FleetID == "":
		return PolicyBundle{}, fmt.Errorf("%w: policy bundle needs a fleet, bytes, a digest and a key id", ErrInvalid)
	}
	b.Tenant, b.Size, b.CreatedAt = tenant, int64(len(b.Bundle)), o.clock()
	_, err := o.exec(ctx, `INSERT INTO policy_bundles (tenant_id, fleet_id, revision, sha256, size, key_id, bundle, created_by, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		tenant, b.FleetID, b.Revision, b.SHA256, b.Size, b.KeyID, b.Bundle, b.CreatedBy, micros(b.CreatedAt))
	if err != nil {
		return PolicyBundle{}, fmt.Errorf("store policy revision %d of fleet %s: %w", b.Revision, b.FleetID, mapInsertErr(err))
	}
	return b, nil
}

// LatestPolicyBundle returns the fleet's newest bundle (with its bytes if
// withBundle), or ErrNotFound if none was pushed.
func (o *ops) LatestPolicyBundle(ctx context.Context, tenant, fleet string, withBundle bool) (PolicyBundle, error) {
	cols := policyMetaCols + `, NULL`
	if withBundle {
		cols = policyMetaCols + `, bundle`
	}
	b, err := scanPolicyBundle(o.queryRow(ctx, `SELECT `+cols+` FROM policy_bundles
		WHERE tenant_id = ? AND fleet_id = ? ORDER BY revision DESC LIMIT 1`, tenant, fleet))
	if err != nil {
		return PolicyBundle{}, fmt.Errorf("policy bundle of fleet %s: %w", fleet, err)
	}
	return b, nil
}

// ListPolicyBundles returns the fleet's bundles without their bytes,
// newest first, at most limit (1 to MaxHistoryPage).
func (o *ops) ListPolicyBundles(ctx context.Context, tenant, fleet string, limit int) ([]PolicyBundle, error) {
	if limit <= 0 || limit > MaxHistoryPage {
		return nil, fmt.Errorf("%w: limit %d", ErrInvalid, limit)
	}
	return queryAll(ctx, o, scanPolicyBundle, `SELECT `+policyMetaCols+`, NULL FROM policy_bundles
		WHERE tenant_id = ? AND fleet_id = ? ORDER BY revision DESC LIMIT ?`, tenant, fleet, limit)
}

const policyMetaCols = `tenant_id, fleet_id, revision, sha256, size, key_id, created_by, created_at`

func scanPolicyBundle(sc scanner) (PolicyBundle, error) {
	var b PolicyBundle
	var created int64
	if err := sc.Scan(&b.Tenant, &b.FleetID, &b.Revision, &b.SHA256, &b.Size, &b.KeyID, &b.CreatedBy, &created, &b.Bundle); err != nil {
		return PolicyBundle{}, mapErr(err)
	}
	b.CreatedAt = fromMicros(created)
	return b, nil
}
