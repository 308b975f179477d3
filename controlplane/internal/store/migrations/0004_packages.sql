-- The package registry and key custody (issue 5). Same conventions as 0001
-- (BIGINT microseconds UTC, BYTEA, JSON as TEXT kept byte for byte, rows
-- keyed by tenant).

-- A tenant's trusted TGSP signer keys ("publishers"): a pushed package must
-- verify against one of them. public_key is the tgsp signer public key body
-- (tgsp.SignerPublicKey.Bytes), key_id its tgsp key id (32 hex digits).
CREATE TABLE publishers (
	tenant_id  TEXT   NOT NULL REFERENCES tenants (id),
	name       TEXT   NOT NULL,
	key_id     TEXT   NOT NULL,
	public_key BYTEA  NOT NULL,
	created_at BIGINT NOT NULL,
	PRIMARY KEY (tenant_id, name),
	UNIQUE (tenant_id, key_id)
);

-- The control plane's own TGSP recipient key, one per tenant: publishers
-- pack to its public part, and the control plane unwraps package DEKs with
-- it to re-wrap them to devices. wrapped_key is the private key sealed
-- under the tenant's data key (itself under the KEK), like tenant_cas.
CREATE TABLE recipient_keys (
	tenant_id   TEXT   PRIMARY KEY REFERENCES tenants (id),
	key_id      TEXT   NOT NULL,
	public_key  BYTEA  NOT NULL,
	wrapped_key BYTEA  NOT NULL,
	created_at  BIGINT NOT NULL
);

-- Pushed packages. id is the lowercase hex SHA-256 of the whole .tgsp file
-- (the blob's content address); signed_id is the TGSP package id
-- (SHA-256 of header and manifest). A name and version exist once per
-- tenant. Rows that will point at a package (rollouts, jobs) reference
-- (tenant_id, id) without ON DELETE CASCADE, so a referenced package cannot
-- be deleted (ErrConflict).
CREATE TABLE packages (
	tenant_id        TEXT   NOT NULL REFERENCES tenants (id),
	id               TEXT   NOT NULL,
	name             TEXT   NOT NULL,
	version          TEXT   NOT NULL,
	signed_id        TEXT   NOT NULL,
	size             BIGINT NOT NULL CHECK (size > 0),
	publisher_key_id TEXT   NOT NULL,
	manifest         TEXT   NOT NULL,
	dp_cert          TEXT,
	evidence         TEXT,
	expires_at       BIGINT NOT NULL,
	created_at       BIGINT NOT NULL,
	PRIMARY KEY (tenant_id, id),
	UNIQUE (tenant_id, name, version)
);
