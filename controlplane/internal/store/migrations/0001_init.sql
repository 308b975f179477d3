-- The control plane's first schema. One file for SQLite and PostgreSQL:
--   * times are BIGINT microseconds since the Unix epoch, UTC (NULL: unset);
--   * binary values are BYTEA (in SQLite the name only sets an affinity that
--     leaves blobs untouched);
--   * JSON is TEXT, kept byte for byte (JSONB would re-encode it);
--   * rows owned by a tenant carry tenant_id, and rows that point at other
--     tenant-owned rows do so through composite (tenant_id, id) foreign keys,
--     so no row can reference another tenant's.

CREATE TABLE tenants (
	id          TEXT   PRIMARY KEY,
	name        TEXT   NOT NULL,
	wrapped_dek BYTEA,
	created_at  BIGINT NOT NULL
);

CREATE TABLE operators (
	id         TEXT    PRIMARY KEY,
	tenant_id  TEXT    NOT NULL REFERENCES tenants (id),
	name       TEXT    NOT NULL,
	role       TEXT    NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
	disabled   BOOLEAN NOT NULL DEFAULT FALSE,
	created_at BIGINT  NOT NULL,
	UNIQUE (tenant_id, id),
	UNIQUE (tenant_id, name)
);

-- Only SHA-256 of the secret is kept; lookups are by id.
CREATE TABLE api_keys (
	id           TEXT   PRIMARY KEY,
	tenant_id    TEXT   NOT NULL,
	operator_id  TEXT   NOT NULL,
	role         TEXT   NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
	name         TEXT   NOT NULL,
	secret_hash  BYTEA  NOT NULL,
	prefix       TEXT   NOT NULL,
	created_at   BIGINT NOT NULL,
	last_used_at BIGINT,
	expires_at   BIGINT,
	revoked_at   BIGINT,
	FOREIGN KEY (tenant_id, operator_id) REFERENCES operators (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX api_keys_by_operator ON api_keys (tenant_id, operator_id);

CREATE TABLE fleets (
	id         TEXT   PRIMARY KEY,
	tenant_id  TEXT   NOT NULL REFERENCES tenants (id),
	name       TEXT   NOT NULL,
	policy     TEXT   NOT NULL,
	created_at BIGINT NOT NULL,
	UNIQUE (tenant_id, id),
	UNIQUE (tenant_id, name)
);

CREATE TABLE devices (
	id             TEXT    PRIMARY KEY,
	tenant_id      TEXT    NOT NULL,
	fleet_id       TEXT    NOT NULL,
	name           TEXT    NOT NULL,
	labels         TEXT    NOT NULL,
	device_type    TEXT    NOT NULL,
	tpm_kind       TEXT    NOT NULL,
	ek_fingerprint TEXT,
	ek_public      BYTEA,
	ak_public      BYTEA,
	cert_serial    TEXT,
	cert_not_after BIGINT,
	status         TEXT    NOT NULL CHECK (status IN ('enrolled', 'revoked')),
	last_seen_at   BIGINT,
	online         BOOLEAN NOT NULL DEFAULT FALSE,
	created_at     BIGINT  NOT NULL,
	revoked_at     BIGINT,
	UNIQUE (tenant_id, id),
	FOREIGN KEY (tenant_id, fleet_id) REFERENCES fleets (tenant_id, id)
);
CREATE INDEX devices_by_fleet ON devices (tenant_id, fleet_id);
-- One TPM, one device record per tenant, revoked or not: a TPM comes back
-- only after an operator deletes its old record.
CREATE UNIQUE INDEX devices_by_ek ON devices (tenant_id, ek_fingerprint) WHERE ek_fingerprint IS NOT NULL;

-- used_by_device is not a foreign key: the token is consumed in the same
-- transaction that creates the device, and the record outlives the device.
CREATE TABLE enrollment_tokens (
	id             TEXT   PRIMARY KEY,
	tenant_id      TEXT   NOT NULL,
	fleet_id       TEXT   NOT NULL,
	secret_hash    BYTEA  NOT NULL,
	created_by     TEXT   NOT NULL,
	created_at     BIGINT NOT NULL,
	expires_at     BIGINT NOT NULL,
	used_at        BIGINT,
	used_by_device TEXT,
	FOREIGN KEY (tenant_id, fleet_id) REFERENCES fleets (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX enrollment_tokens_by_fleet ON enrollment_tokens (tenant_id, fleet_id);

-- The tenant's CA; wrapped_key is the private key sealed under the KEK.
CREATE TABLE tenant_cas (
	tenant_id   TEXT   PRIMARY KEY REFERENCES tenants (id),
	cert_der    BYTEA  NOT NULL,
	wrapped_key BYTEA  NOT NULL,
	created_at  BIGINT NOT NULL
);

-- Every certificate the tenant CA issued. device_id is not a foreign key so
-- that revocations outlive a deleted device.
CREATE TABLE issued_certs (
	tenant_id  TEXT   NOT NULL REFERENCES tenants (id),
	serial     TEXT   NOT NULL,
	device_id  TEXT   NOT NULL,
	not_before BIGINT NOT NULL,
	not_after  BIGINT NOT NULL,
	revoked_at BIGINT,
	PRIMARY KEY (tenant_id, serial)
);
CREATE INDEX issued_certs_by_device ON issued_certs (tenant_id, device_id);
CREATE INDEX issued_certs_revoked ON issued_certs (tenant_id, not_after) WHERE revoked_at IS NOT NULL;

-- One row per tenant: the last audit sequence number. Appending updates it,
-- which serialises appends per tenant (row lock on PostgreSQL).
CREATE TABLE audit_heads (
	tenant_id TEXT   PRIMARY KEY REFERENCES tenants (id),
	seq       BIGINT NOT NULL
);

-- The hash chain itself; hashes are computed by the caller.
CREATE TABLE audit_log (
	tenant_id  TEXT   NOT NULL REFERENCES tenants (id),
	seq        BIGINT NOT NULL,
	at         BIGINT NOT NULL,
	actor      TEXT   NOT NULL,
	action     TEXT   NOT NULL,
	target     TEXT   NOT NULL,
	request_id TEXT   NOT NULL,
	details    TEXT   NOT NULL,
	prev_hash  BYTEA  NOT NULL,
	hash       BYTEA  NOT NULL,
	PRIMARY KEY (tenant_id, seq)
);
