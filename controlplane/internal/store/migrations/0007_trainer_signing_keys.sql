-- TG-Tinker: the key that signs the packages the trainer exports for a
-- tenant (one per tenant; the private key sealed under the tenant's data
-- key). The control plane pins its public key as the tenant's publisher
-- "tg-tinker", so exported packages can be pushed and rolled out.
CREATE TABLE trainer_signing_keys (
	tenant_id   TEXT   PRIMARY KEY REFERENCES tenants (id),
	key_id      TEXT   NOT NULL,
	public_key  BYTEA  NOT NULL,
	wrapped_key BYTEA  NOT NULL,
	created_at  BIGINT NOT NULL
);
