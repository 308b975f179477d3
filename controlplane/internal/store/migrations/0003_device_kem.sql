-- Package key grants (issue 5): each device's X-Wing (ML-KEM-768 + X25519)
-- public key, the recipient key the control plane re-wraps a package's DEK
-- to. The device generates the key pair at enrollment and keeps the private
-- part sealed by its TPM. NULL for devices enrolled before, or without one:
-- they get no key grants until they register a key.
ALTER TABLE devices ADD COLUMN kem_public BYTEA;
