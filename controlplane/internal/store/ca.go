package store

import (
	"context"
	"database/sql"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// CA is a tenant's certificate authority: its certificate and its private
// key sealed under the KEK (opaque here).
type CA struct {
	Tenant     string
	CertDER    []byte
	WrappedKey []byte
	CreatedAt  time.Time
}

// CreateCA stores tenant's CA. A tenant has one; a second is ErrConflict.
func (o *ops) CreateCA(ctx context.Context, tenant string, ca CA) (CA, error) {
	if len(ca.CertDER) == 0 || len(ca.WrappedKey) == 0 {
		return CA{}, fmt.Errorf("%w: CA needs a certificate and a wrapped key", ErrInvalid)
	}
	ca.Tenant, ca.CreatedAt = tenant, o.clock()
	if _, err := o.exec(ctx, `INSERT INTO tenant_cas (tenant_id, cert_der, wrapped_key, created_at) VALUES (?, ?, ?, ?)`,
		tenant, ca.CertDER, ca.WrappedKey, micros(ca.CreatedAt)); err != nil {
		return CA{}, fmt.Errorf("create CA of tenant %s: %w", tenant, mapInsertErr(err))
	}
	return ca, nil
}

// GetCA returns tenant's CA.
func (o *ops) GetCA(ctx context.Context, tenant string) (CA, error) {
	var ca CA
	var created int64
	err := o.queryRow(ctx, `SELECT tenant_id, cert_der, wrapped_key, created_at FROM tenant_cas WHERE tenant_id = ?`, tenant).
		Scan(&ca.Tenant, &ca.CertDER, &ca.WrappedKey, &created)
	if err != nil {
		return CA{}, fmt.Errorf("CA of tenant %s: %w", tenant, mapErr(err))
	}
	ca.CreatedAt = fromMicros(created)
	return ca, nil
}

// IssuedCert is a certificate the tenant CA issued to a device. Serial is
// lowercase hex ([SerialString]). RevokedAt is zero unless revoked.
type IssuedCert struct {
	Serial    string
	Tenant    string
	DeviceID  string
	NotBefore time.Time
	NotAfter  time.Time
	RevokedAt time.Time
}

// SerialString is the form serials are stored and looked up in: lowercase
// hex without leading zeros.
func SerialString(serial *big.Int) string { return serial.Text(16) }

// RecordCertificate stores a certificate issued to device c.DeviceID of
// tenant and makes it the device's current one, atomically.
func (o *ops) RecordCertificate(ctx context.Context, tenant string, c IssuedCert) error {
	serial := strings.ToLower(c.Serial)
	if serial == "" || c.NotAfter.IsZero() {
		return fmt.Errorf("%w: certificate needs a serial and an expiry", ErrInvalid)
	}
	err := o.inTx(ctx, func(o *ops) error {
		if err := o.execOne(ctx, `UPDATE devices SET cert_serial = ?, cert_not_after = ? WHERE tenant_id = ? AND id = ?`,
			serial, micros(c.NotAfter), tenant, c.DeviceID); err != nil {
			return err
		}
		_, err := o.exec(ctx, `INSERT INTO issued_certs (tenant_id, serial, device_id, not_before, not_after) VALUES (?, ?, ?, ?, ?)`,
			tenant, serial, c.DeviceID, micros(c.NotBefore), micros(c.NotAfter))
		return mapInsertErr(err)
	})
	if err != nil {
		return fmt.Errorf("record certificate %s for device %s: %w", serial, c.DeviceID, err)
	}
	return nil
}

// RevokeCertificate revokes one certificate of tenant. Revoking a revoked
// certificate changes nothing.
func (o *ops) RevokeCertificate(ctx context.Context, tenant, serial string) error {
	if err := o.execOne(ctx, `UPDATE issued_certs SET revoked_at = COALESCE(revoked_at, ?) WHERE tenant_id = ? AND serial = ?`,
		micros(o.clock()), tenant, strings.ToLower(serial)); err != nil {
		return fmt.Errorf("revoke certificate %s: %w", serial, err)
	}
	return nil
}

// RevokedSerials returns tenant's revoked certificates that have not yet
// expired — what a CRL or a TLS check needs; expired ones are refused
// anyway. Ordered by serial.
func (o *ops) RevokedSerials(ctx context.Context, tenant string) ([]IssuedCert, error) {
	return queryAll(ctx, o, scanCert, `SELECT serial, tenant_id, device_id, not_before, not_after, revoked_at
		FROM issued_certs WHERE tenant_id = ? AND revoked_at IS NOT NULL AND not_after > ? ORDER BY serial`,
		tenant, micros(o.clock()))
}

// IsRevoked reports whether tenant's certificate with this serial is
// revoked. A serial the CA never issued is ErrNotFound, which a TLS check
// should treat as refused.
func (o *ops) IsRevoked(ctx context.Context, tenant, serial string) (bool, error) {
	var revoked sql.NullInt64
	err := o.queryRow(ctx, `SELECT revoked_at FROM issued_certs WHERE tenant_id = ? AND serial = ?`,
		tenant, strings.ToLower(serial)).Scan(&revoked)
	if err != nil {
		return false, fmt.Errorf("certificate %s: %w", serial, mapErr(err))
	}
	return revoked.Valid, nil
}

func scanCert(sc scanner) (IssuedCert, error) {
	var c IssuedCert
	var nb, na int64
	var revoked sql.NullInt64
	if err := sc.Scan(&c.Serial, &c.Tenant, &c.DeviceID, &nb, &na, &revoked); err != nil {
		return IssuedCert{}, mapErr(err)
	}
	c.NotBefore, c.NotAfter, c.RevokedAt = fromMicros(nb), fromMicros(na), fromNullMicros(revoked)
	return c, nil
}
