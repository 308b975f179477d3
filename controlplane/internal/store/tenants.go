package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Tenant is an isolated customer. WrappedDEK is the tenant's data key sealed
// under the KEK (opaque here).
type Tenant struct {
	ID         string
	Name       string
	CreatedAt  time.Time
	WrappedDEK []byte
}

// CreateTenant stores a new tenant; t.ID must be a slug (see
// [ValidTenantID]) and Name defaults to it. The tenant's audit chain starts
// empty.
func (o *ops) CreateTenant(ctx context.Context, t Tenant) (Tenant, error) {
	if !ValidTenantID(t.ID) {
		return Tenant{}, fmt.Errorf("%w: tenant id %q must match %s", ErrInvalid, t.ID, tenantIDRe)
	}
	if t.Name == "" {
		t.Name = t.ID
	}
	t.CreatedAt = o.clock()
	err := o.inTx(ctx, func(o *ops) error {
		if _, err := o.exec(ctx, `INSERT INTO tenants (id, name, wrapped_dek, created_at) VALUES (?, ?, ?, ?)`,
			t.ID, t.Name, t.WrappedDEK, micros(t.CreatedAt)); err != nil {
			return mapErr(err)
		}
		_, err := o.exec(ctx, `INSERT INTO audit_heads (tenant_id, seq) VALUES (?, 0)`, t.ID)
		return mapErr(err)
	})
	if err != nil {
		return Tenant{}, fmt.Errorf("create tenant %s: %w", t.ID, err)
	}
	return t, nil
}

const tenantCols = `id, name, wrapped_dek, created_at`

func scanTenant(sc scanner) (Tenant, error) {
	var t Tenant
	var created int64
	if err := sc.Scan(&t.ID, &t.Name, &t.WrappedDEK, &created); err != nil {
		return Tenant{}, mapErr(err)
	}
	t.CreatedAt = fromMicros(created)
	return t, nil
}

// GetTenant returns the tenant with this id.
func (o *ops) GetTenant(ctx context.Context, id string) (Tenant, error) {
	t, err := scanTenant(o.queryRow(ctx, `SELECT `+tenantCols+` FROM tenants WHERE id = ?`, id))
	if err != nil {
		return Tenant{}, fmt.Errorf("tenant %s: %w", id, err)
	}
	return t, nil
}

// ListTenants returns all tenants by id.
func (o *ops) ListTenants(ctx context.Context) ([]Tenant, error) {
	return queryAll(ctx, o, scanTenant, `SELECT `+tenantCols+` FROM tenants ORDER BY id`)
}

// SetTenantDEK replaces the tenant's wrapped data key (after the KEK is
// rotated and the DEK rewrapped).
func (o *ops) SetTenantDEK(ctx context.Context, id string, wrapped []byte) error {
	if err := o.execOne(ctx, `UPDATE tenants SET wrapped_dek = ? WHERE id = ?`, wrapped, id); err != nil {
		return fmt.Errorf("set DEK of tenant %s: %w", id, err)
	}
	return nil
}

// Role is what an operator or API key may do.
type Role string

// Roles, most powerful first.
const (
	RoleAdmin    Role = "admin"    // everything, including operators and keys
	RoleOperator Role = "operator" // fleets, devices, rollouts
	RoleViewer   Role = "viewer"   // read only
)

func (r Role) rank() int {
	switch r {
	case RoleAdmin:
		return 3
	case RoleOperator:
		return 2
	case RoleViewer:
		return 1
	}
	return 0
}

// Valid reports whether r is one of the three roles.
func (r Role) Valid() bool { return r.rank() > 0 }

// AtLeast reports whether r grants everything min grants.
func (r Role) AtLeast(min Role) bool { return r.Valid() && r.rank() >= min.rank() }

// lower returns the less powerful of two roles.
func lower(a, b Role) Role {
	if a.rank() <= b.rank() {
		return a
	}
	return b
}

// Operator is a person or automation acting on one tenant.
type Operator struct {
	ID        string
	Tenant    string
	Name      string
	Role      Role
	CreatedAt time.Time
	Disabled  bool
}

// CreateOperator stores a new operator of tenant; ID is generated unless
// set. Names are unique per tenant.
func (o *ops) CreateOperator(ctx context.Context, tenant string, op Operator) (Operator, error) {
	var err error
	if op.ID, err = idOrNew(PrefixOperator, op.ID); err != nil {
		return Operator{}, err
	}
	if op.Name == "" || !op.Role.Valid() {
		return Operator{}, fmt.Errorf("%w: operator needs a name and a role (admin, operator, viewer)", ErrInvalid)
	}
	op.Tenant, op.CreatedAt = tenant, o.clock()
	if _, err := o.exec(ctx, `INSERT INTO operators (id, tenant_id, name, role, disabled, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		op.ID, tenant, op.Name, string(op.Role), op.Disabled, micros(op.CreatedAt)); err != nil {
		return Operator{}, fmt.Errorf("create operator %q: %w", op.Name, mapInsertErr(err))
	}
	return op, nil
}

const operatorCols = `id, tenant_id, name, role, created_at, disabled`

func scanOperator(sc scanner) (Operator, error) {
	var op Operator
	var created int64
	if err := sc.Scan(&op.ID, &op.Tenant, &op.Name, &op.Role, &created, &op.Disabled); err != nil {
		return Operator{}, mapErr(err)
	}
	op.CreatedAt = fromMicros(created)
	return op, nil
}

// GetOperator returns one operator of tenant.
func (o *ops) GetOperator(ctx context.Context, tenant, id string) (Operator, error) {
	op, err := scanOperator(o.queryRow(ctx, `SELECT `+operatorCols+` FROM operators WHERE tenant_id = ? AND id = ?`, tenant, id))
	if err != nil {
		return Operator{}, fmt.Errorf("operator %s: %w", id, err)
	}
	return op, nil
}

// ListOperators returns tenant's operators by name.
func (o *ops) ListOperators(ctx context.Context, tenant string) ([]Operator, error) {
	return queryAll(ctx, o, scanOperator, `SELECT `+operatorCols+` FROM operators WHERE tenant_id = ? ORDER BY name`, tenant)
}

// OperatorUpdate lists the fields to change; nil leaves a field alone.
type OperatorUpdate struct {
	Name     *string
	Role     *Role
	Disabled *bool
}

// UpdateOperator changes an operator of tenant and returns the result.
// Lowering an operator's role lowers what its API keys may do at once (see
// [Store.AuthenticateAPIKey]).
func (o *ops) UpdateOperator(ctx context.Context, tenant, id string, u OperatorUpdate) (Operator, error) {
	var set []string
	var args []any
	if u.Name != nil {
		if *u.Name == "" {
			return Operator{}, fmt.Errorf("%w: empty operator name", ErrInvalid)
		}
		set, args = append(set, "name = ?"), append(args, *u.Name)
	}
	if u.Role != nil {
		if !u.Role.Valid() {
			return Operator{}, fmt.Errorf("%w: role %q", ErrInvalid, *u.Role)
		}
		set, args = append(set, "role = ?"), append(args, string(*u.Role))
	}
	if u.Disabled != nil {
		set, args = append(set, "disabled = ?"), append(args, *u.Disabled)
	}
	if len(set) == 0 {
		return o.GetOperator(ctx, tenant, id)
	}
	args = append(args, tenant, id)
	op, err := scanOperator(o.queryRowW(ctx, `UPDATE operators SET `+strings.Join(set, ", ")+
		` WHERE tenant_id = ? AND id = ? RETURNING `+operatorCols, args...))
	if err != nil {
		return Operator{}, fmt.Errorf("update operator %s: %w", id, err)
	}
	return op, nil
}

// DeleteOperator removes an operator of tenant and its API keys.
func (o *ops) DeleteOperator(ctx context.Context, tenant, id string) error {
	if err := o.execOne(ctx, `DELETE FROM operators WHERE tenant_id = ? AND id = ?`, tenant, id); err != nil {
		return fmt.Errorf("delete operator %s: %w", id, err)
	}
	return nil
}

// APIKey is an operator's bearer credential. Prefix is the start of the
// presented key, safe to display. Zero times mean unset: never used, never
// expires, not revoked.
type APIKey struct {
	ID         string
	Tenant     string
	OperatorID string
	Role       Role
	Name       string
	Prefix     string
	CreatedAt  time.Time
	LastUsedAt time.Time
	ExpiresAt  time.Time
	RevokedAt  time.Time
}

// apiKeyScheme starts every presented API key: tgk_<key id>_<secret>.
const apiKeyScheme = "tgk"

// lastUsedGranularity limits last_used_at writes to one per key per minute,
// so authentication is not a write on every request.
const lastUsedGranularity = time.Minute

// CreateAPIKey creates a key for an operator of tenant with k's OperatorID,
// Role (at most the operator's own), Name and optional ExpiresAt. It returns
// the stored key and the presented secret, which exists only in this return
// value: show it once.
func (o *ops) CreateAPIKey(ctx context.Context, tenant string, k APIKey) (APIKey, string, error) {
	if !k.Role.Valid() {
		return APIKey{}, "", fmt.Errorf("%w: API key role %q", ErrInvalid, k.Role)
	}
	now := o.clock()
	k.ExpiresAt = k.ExpiresAt.UTC().Truncate(time.Microsecond)
	if !k.ExpiresAt.IsZero() && !k.ExpiresAt.After(now) {
		return APIKey{}, "", fmt.Errorf("%w: API key would expire at once", ErrInvalid)
	}
	opRole, err := o.operatorRole(ctx, tenant, k.OperatorID)
	if err != nil {
		return APIKey{}, "", fmt.Errorf("create API key: operator %s: %w", k.OperatorID, err)
	}
	if !opRole.AtLeast(k.Role) {
		return APIKey{}, "", fmt.Errorf("%w: a %s cannot hold a %s key", ErrInvalid, opRole, k.Role)
	}
	k.ID, k.Tenant, k.CreatedAt = NewID(PrefixAPIKey), tenant, now
	k.LastUsedAt, k.RevokedAt = time.Time{}, time.Time{}
	secret := newSecret()
	presented := apiKeyScheme + "_" + k.ID + "_" + secret
	k.Prefix = presented[:len(apiKeyScheme)+1+len(k.ID)+1+4]
	if _, err := o.exec(ctx, `INSERT INTO api_keys (id, tenant_id, operator_id, role, name, secret_hash, prefix, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		k.ID, tenant, k.OperatorID, string(k.Role), k.Name, hashSecret(secret), k.Prefix, micros(now), nullMicros(k.ExpiresAt)); err != nil {
		return APIKey{}, "", fmt.Errorf("create API key: %w", mapInsertErr(err))
	}
	return k, presented, nil
}

func (o *ops) operatorRole(ctx context.Context, tenant, id string) (Role, error) {
	var r Role
	err := o.queryRow(ctx, `SELECT role FROM operators WHERE tenant_id = ? AND id = ?`, tenant, id).Scan(&r)
	return r, mapErr(err)
}

const apiKeyCols = `id, tenant_id, operator_id, role, name, prefix, created_at, last_used_at, expires_at, revoked_at`

func scanAPIKey(sc scanner, extra ...any) (APIKey, error) {
	var k APIKey
	var created int64
	var used, expires, revoked sql.NullInt64
	dest := append([]any{&k.ID, &k.Tenant, &k.OperatorID, &k.Role, &k.Name, &k.Prefix, &created, &used, &expires, &revoked}, extra...)
	if err := sc.Scan(dest...); err != nil {
		return APIKey{}, mapErr(err)
	}
	k.CreatedAt, k.LastUsedAt = fromMicros(created), fromNullMicros(used)
	k.ExpiresAt, k.RevokedAt = fromNullMicros(expires), fromNullMicros(revoked)
	return k, nil
}

// GetAPIKey returns one API key of tenant (never its secret).
func (o *ops) GetAPIKey(ctx context.Context, tenant, id string) (APIKey, error) {
	k, err := scanAPIKey(o.queryRow(ctx, `SELECT `+apiKeyCols+` FROM api_keys WHERE tenant_id = ? AND id = ?`, tenant, id))
	if err != nil {
		return APIKey{}, fmt.Errorf("API key %s: %w", id, err)
	}
	return k, nil
}

// ListAPIKeys returns tenant's API keys, only operatorID's if it is set,
// oldest first.
func (o *ops) ListAPIKeys(ctx context.Context, tenant, operatorID string) ([]APIKey, error) {
	q, args := `SELECT `+apiKeyCols+` FROM api_keys WHERE tenant_id = ?`, []any{tenant}
	if operatorID != "" {
		q, args = q+` AND operator_id = ?`, append(args, operatorID)
	}
	return queryAll(ctx, o, func(sc scanner) (APIKey, error) { return scanAPIKey(sc) },
		q+` ORDER BY created_at, id`, args...)
}

// RevokeAPIKey revokes an API key of tenant for good. Revoking a revoked
// key changes nothing.
func (o *ops) RevokeAPIKey(ctx context.Context, tenant, id string) error {
	if err := o.execOne(ctx, `UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE tenant_id = ? AND id = ?`,
		micros(o.clock()), tenant, id); err != nil {
		return fmt.Errorf("revoke API key %s: %w", id, err)
	}
	return nil
}

// AuthenticateAPIKey checks a presented key (tgk_<key id>_<secret>) and
// returns it with its tenant and its effective role: the lower of the key's
// and its operator's current role. Any failure — malformed, unknown, wrong
// secret, revoked, expired, operator disabled — is ErrUnauthenticated.
func (o *ops) AuthenticateAPIKey(ctx context.Context, presented string) (APIKey, error) {
	id, secret, ok := parseSecret(presented, apiKeyScheme, PrefixAPIKey)
	if !ok {
		return APIKey{}, fmt.Errorf("%w: malformed API key", ErrUnauthenticated)
	}
	var hash []byte
	var opRole Role
	var disabled bool
	k, err := scanAPIKey(o.queryRow(ctx, `SELECT k.id, k.tenant_id, k.operator_id, k.role, k.name, k.prefix, k.created_at, k.last_used_at, k.expires_at, k.revoked_at,
		k.secret_hash, p.role, p.disabled
		FROM api_keys k JOIN operators p ON p.tenant_id = k.tenant_id AND p.id = k.operator_id
		WHERE k.id = ?`, id), &hash, &opRole, &disabled)
	switch {
	case errors.Is(err, ErrNotFound):
		return APIKey{}, fmt.Errorf("%w: unknown API key", ErrUnauthenticated)
	case err != nil:
		return APIKey{}, fmt.Errorf("authenticate API key: %w", err)
	case !secretMatches(secret, hash):
		return APIKey{}, fmt.Errorf("%w: wrong API key secret", ErrUnauthenticated)
	}
	now := o.clock()
	switch {
	case !k.RevokedAt.IsZero():
		return APIKey{}, fmt.Errorf("%w: API key %s revoked", ErrUnauthenticated, k.ID)
	case !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt):
		return APIKey{}, fmt.Errorf("%w: API key %s expired", ErrUnauthenticated, k.ID)
	case disabled:
		return APIKey{}, fmt.Errorf("%w: operator %s disabled", ErrUnauthenticated, k.OperatorID)
	}
	k.Role = lower(k.Role, opRole)
	if k.LastUsedAt.IsZero() || now.Sub(k.LastUsedAt) >= lastUsedGranularity {
		if _, err := o.exec(ctx, `UPDATE api_keys SET last_used_at = ? WHERE id = ?`, micros(now), k.ID); err != nil {
			return APIKey{}, fmt.Errorf("record API key use: %w", err)
		}
		k.LastUsedAt = now
	}
	return k, nil
}

// queryAll runs a query on the readers and scans every row.
func queryAll[T any](ctx context.Context, o *ops, scan func(scanner) (T, error), q string, args ...any) ([]T, error) {
	rows, err := o.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }
