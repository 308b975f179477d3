-- Policy bundles (issue 5, docs/policy.md). Same conventions as 0001
-- (BIGINT microseconds UTC, BYTEA, composite tenant foreign keys).

-- Each tenant's policy signing key (ECDSA P-256, JWS ES256): key_id names it
-- in bundle signatures and in the pin devices keep; public_key is its PKIX
-- DER; wrapped_key is the PKCS #8 private key sealed under the tenant's data
-- key (itself under the KEK), like tenant_cas. One key per tenant: devices
-- refuse a change of key.
CREATE TABLE policy_signing_keys (
	tenant_id   TEXT   PRIMARY KEY REFERENCES tenants (id),
	key_id      TEXT   NOT NULL,
	public_key  BYTEA  NOT NULL,
	wrapped_key BYTEA  NOT NULL,
	created_at  BIGINT NOT NULL
);

-- The last revision handed out per fleet. Pushing updates it, which
-- serialises pushes to one fleet (row lock on PostgreSQL) and keeps
-- revisions strictly increasing even if old bundles are pruned.
CREATE TABLE policy_heads (
	tenant_id TEXT   NOT NULL,
	fleet_id  TEXT   NOT NULL,
	revision  BIGINT NOT NULL CHECK (revision > 0),
	PRIMARY KEY (tenant_id, fleet_id),
	FOREIGN KEY (tenant_id, fleet_id) REFERENCES fleets (tenant_id, id) ON DELETE CASCADE
);

-- Every signed bundle pushed to a fleet; the newest revision is the fleet's
-- policy. bundle is the signed OPA bundle (gzipped tar, at most 4 MiB);
-- sha256 its lowercase hex digest.
CREATE TABLE policy_bundles (
	tenant_id  TEXT   NOT NULL,
	fleet_id   TEXT   NOT NULL,
	revision   BIGINT NOT NULL CHECK (revision > 0),
	sha256     TEXT   NOT NULL,
	size       BIGINT NOT NULL,
	key_id     TEXT   NOT NULL,
	bundle     BYTEA  NOT NULL,
	created_by TEXT   NOT NULL,
	created_at BIGINT NOT NULL,
	PRIMARY KEY (tenant_id, fleet_id, revision),
	FOREIGN KEY (tenant_id, fleet_id) REFERENCES fleets (tenant_id, id) ON DELETE CASCADE
);
