package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// EnrollmentToken lets one device join one fleet, once, before ExpiresAt.
// UsedAt and UsedByDevice are set when it is consumed.
type EnrollmentToken struct {
	ID           string
	Tenant       string
	FleetID      string
	CreatedBy    string // operator id, or whoever created it
	CreatedAt    time.Time
	ExpiresAt    time.Time
	UsedAt       time.Time
	UsedByDevice string
}

// tokenScheme starts every presented enrollment token: tgt_<token id>_<secret>.
const tokenScheme = "tgt"

// CreateEnrollmentToken creates a token for fleet t.FleetID of tenant,
// valid until t.ExpiresAt, recording t.CreatedBy. It returns the stored token
// and the presented secret, which exists only in this return value.
func (o *ops) CreateEnrollmentToken(ctx context.Context, tenant string, t EnrollmentToken) (EnrollmentToken, string, error) {
	now := o.clock()
	t.ExpiresAt = t.ExpiresAt.UTC().Truncate(time.Microsecond)
	if !t.ExpiresAt.After(now) {
		return EnrollmentToken{}, "", fmt.Errorf("%w: enrollment token must expire in the future", ErrInvalid)
	}
	t.ID, t.Tenant, t.CreatedAt = NewID(PrefixToken), tenant, now
	t.UsedAt, t.UsedByDevice = time.Time{}, ""
	secret := newSecret()
	if _, err := o.exec(ctx, `INSERT INTO enrollment_tokens (id, tenant_id, fleet_id, secret_hash, created_by, created_at, expires_at)
		VALUES (?, ?, ?, ?, ?, ?, ?)`,
		t.ID, tenant, t.FleetID, hashSecret(secret), t.CreatedBy, micros(now), micros(t.ExpiresAt)); err != nil {
		return EnrollmentToken{}, "", fmt.Errorf("create enrollment token for fleet %s: %w", t.FleetID, mapInsertErr(err))
	}
	return t, tokenScheme + "_" + t.ID + "_" + secret, nil
}

const tokenCols = `id, tenant_id, fleet_id, created_by, created_at, expires_at, used_at, used_by_device`

func scanToken(sc scanner, extra ...any) (EnrollmentToken, error) {
	var t EnrollmentToken
	var created, expires int64
	var used sql.NullInt64
	var usedBy sql.NullString
	dest := append([]any{&t.ID, &t.Tenant, &t.FleetID, &t.CreatedBy, &created, &expires, &used, &usedBy}, extra...)
	if err := sc.Scan(dest...); err != nil {
		return EnrollmentToken{}, mapErr(err)
	}
	t.CreatedAt, t.ExpiresAt, t.UsedAt, t.UsedByDevice = fromMicros(created), fromMicros(expires), fromNullMicros(used), usedBy.String
	return t, nil
}

// GetEnrollmentToken returns one token of tenant (never its secret).
func (o *ops) GetEnrollmentToken(ctx context.Context, tenant, id string) (EnrollmentToken, error) {
	t, err := scanToken(o.queryRow(ctx, `SELECT `+tokenCols+` FROM enrollment_tokens WHERE tenant_id = ? AND id = ?`, tenant, id))
	if err != nil {
		return EnrollmentToken{}, fmt.Errorf("enrollment token %s: %w", id, err)
	}
	return t, nil
}

// ListEnrollmentTokens returns tenant's tokens, only fleetID's if it is set,
// oldest first.
func (o *ops) ListEnrollmentTokens(ctx context.Context, tenant, fleetID string) ([]EnrollmentToken, error) {
	q, args := `SELECT `+tokenCols+` FROM enrollment_tokens WHERE tenant_id = ?`, []any{tenant}
	if fleetID != "" {
		q, args = q+` AND fleet_id = ?`, append(args, fleetID)
	}
	return queryAll(ctx, o, func(sc scanner) (EnrollmentToken, error) { return scanToken(sc) }, q+` ORDER BY created_at, id`, args...)
}

// DeleteEnrollmentToken withdraws a token of tenant.
func (o *ops) DeleteEnrollmentToken(ctx context.Context, tenant, id string) error {
	if err := o.execOne(ctx, `DELETE FROM enrollment_tokens WHERE tenant_id = ? AND id = ?`, tenant, id); err != nil {
		return fmt.Errorf("delete enrollment token %s: %w", id, err)
	}
	return nil
}

// LookupEnrollmentToken checks a presented token without consuming it, so
// that enrollment can fail fast before the TPM challenge; the tenant and
// fleet come from the token. Errors are those of ConsumeEnrollmentToken.
func (o *ops) LookupEnrollmentToken(ctx context.Context, presented string) (EnrollmentToken, error) {
	t, err := o.checkToken(ctx, o.rd, presented)
	if err != nil {
		return EnrollmentToken{}, fmt.Errorf("enrollment token: %w", err)
	}
	return t, nil
}

// ConsumeEnrollmentToken uses up a presented token for deviceID and returns
// it. It is atomic: of any number of concurrent consumers exactly one
// succeeds and the others get ErrTokenUsed. An unknown token or a wrong
// secret is ErrNotFound, an expired one ErrTokenExpired. Call it in the
// transaction that creates the device, so a failed enrollment leaves the
// token unused.
func (o *ops) ConsumeEnrollmentToken(ctx context.Context, presented, deviceID string) (EnrollmentToken, error) {
	t, err := o.checkToken(ctx, o.wr, presented)
	if err != nil {
		return EnrollmentToken{}, fmt.Errorf("consume enrollment token: %w", err)
	}
	now := o.clock()
	// The conditions make this the single atomic step: PostgreSQL re-checks
	// them after waiting for a concurrent consumer's row lock, SQLite runs
	// one writer at a time.
	res, err := o.exec(ctx, `UPDATE enrollment_tokens SET used_at = ?, used_by_device = ?
		WHERE id = ? AND used_at IS NULL AND expires_at > ?`, micros(now), deviceID, t.ID, micros(now))
	if err != nil {
		return EnrollmentToken{}, fmt.Errorf("consume enrollment token %s: %w", t.ID, err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		// Lost a race: find out to what.
		if _, err := o.checkToken(ctx, o.wr, presented); err != nil {
			return EnrollmentToken{}, fmt.Errorf("consume enrollment token: %w", err)
		}
		return EnrollmentToken{}, fmt.Errorf("consume enrollment token %s: %w", t.ID, ErrTokenUsed)
	}
	t.UsedAt, t.UsedByDevice = now, deviceID
	return t, nil
}

// checkToken finds a presented token and checks its secret, use and expiry.
func (o *ops) checkToken(ctx context.Context, r runner, presented string) (EnrollmentToken, error) {
	id, secret, ok := parseSecret(presented, tokenScheme, PrefixToken)
	if !ok {
		return EnrollmentToken{}, fmt.Errorf("malformed token: %w", ErrNotFound)
	}
	var hash []byte
	t, err := scanToken(r.QueryRowContext(ctx, o.d.rebind(`SELECT `+tokenCols+`, secret_hash FROM enrollment_tokens WHERE id = ?`), id), &hash)
	if err != nil {
		return EnrollmentToken{}, err
	}
	if !secretMatches(secret, hash) {
		// Indistinguishable from an unknown token on purpose.
		return EnrollmentToken{}, ErrNotFound
	}
	switch {
	case !t.UsedAt.IsZero():
		return EnrollmentToken{}, fmt.Errorf("token %s: %w", t.ID, ErrTokenUsed)
	case !o.clock().Before(t.ExpiresAt):
		return EnrollmentToken{}, fmt.Errorf("token %s: %w", t.ID, ErrTokenExpired)
	}
	return t, nil
}
