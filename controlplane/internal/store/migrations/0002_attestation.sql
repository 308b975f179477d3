-- Fleet attestation (issue 4): each device's current verdict and the state
-- the verifier carries between quotes, the verdict history, and the
-- single-use challenge nonces. Same conventions as 0001 (BIGINT microseconds
-- UTC, BYTEA, JSON as TEXT kept byte for byte, composite tenant foreign
-- keys). Every table hangs off devices with ON DELETE CASCADE: deleting a
-- device removes its attestation rows.

-- One row per device that has been attested, challenged or quarantined; a
-- device without a row is "unknown". verdict_at is NULL until the first
-- verdict. The tpm_* columns are the TPM clock info of the last trusted
-- quote (all NULL before the first): reset_count and restart_count are
-- uint32 values, tpm_clock and firmware_version uint64 values stored as the
-- int64 with the same bits (compare them in Go, not in SQL).
CREATE TABLE attestation_state (
	tenant_id            TEXT    NOT NULL,
	device_id            TEXT    NOT NULL,
	state                TEXT    NOT NULL CHECK (state IN ('trusted', 'untrusted', 'stale', 'unknown')),
	reasons              TEXT,
	pcr_digest           TEXT,
	evidence_at          BIGINT,
	verdict_at           BIGINT,
	nonce_age_ms         BIGINT  NOT NULL DEFAULT 0,
	reboot               BOOLEAN NOT NULL DEFAULT FALSE,
	tpm_clock            BIGINT,
	reset_count          BIGINT  CHECK (reset_count BETWEEN 0 AND 4294967295),
	restart_count        BIGINT  CHECK (restart_count BETWEEN 0 AND 4294967295),
	firmware_version     BIGINT,
	trusted_at           BIGINT,
	baseline_pcrs        TEXT,
	quarantined          BOOLEAN NOT NULL DEFAULT FALSE,
	last_challenge_at    BIGINT,
	consecutive_failures INTEGER NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
	PRIMARY KEY (tenant_id, device_id),
	FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE,
	CHECK ((tpm_clock IS NULL AND reset_count IS NULL AND restart_count IS NULL AND firmware_version IS NULL)
		OR (tpm_clock IS NOT NULL AND reset_count IS NOT NULL AND restart_count IS NOT NULL AND firmware_version IS NOT NULL))
);
-- For the stale sweep: verdicts older than a cutoff.
CREATE INDEX attestation_state_by_verdict_at ON attestation_state (tenant_id, verdict_at);

-- Per device, the last history sequence number. Appending updates it, which
-- serialises appends per device (row lock on PostgreSQL) and keeps seq
-- contiguous, so trimming to the newest N is a range delete.
CREATE TABLE attestation_history_heads (
	tenant_id TEXT   NOT NULL,
	device_id TEXT   NOT NULL,
	seq       BIGINT NOT NULL,
	PRIMARY KEY (tenant_id, device_id),
	FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE attestation_history (
	tenant_id    TEXT    NOT NULL,
	device_id    TEXT    NOT NULL,
	seq          BIGINT  NOT NULL,
	verdict_at   BIGINT  NOT NULL,
	state        TEXT    NOT NULL CHECK (state IN ('trusted', 'untrusted', 'stale', 'unknown')),
	reasons      TEXT,
	pcr_digest   TEXT,
	evidence_at  BIGINT,
	nonce_age_ms BIGINT  NOT NULL DEFAULT 0,
	reboot       BOOLEAN NOT NULL DEFAULT FALSE,
	PRIMARY KEY (tenant_id, device_id, seq),
	FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX attestation_history_by_time ON attestation_history (tenant_id, device_id, verdict_at);

-- Challenge nonces. Only SHA-256 of the nonce is kept: a leaked row cannot
-- answer a challenge. A nonce is consumed by setting used_at; rows stay until
-- pruned after expiry so that a replay is reported as one.
CREATE TABLE attestation_nonces (
	id         TEXT   PRIMARY KEY,
	tenant_id  TEXT   NOT NULL,
	device_id  TEXT   NOT NULL,
	nonce_hash BYTEA  NOT NULL,
	issued_at  BIGINT NOT NULL,
	expires_at BIGINT NOT NULL,
	used_at    BIGINT,
	FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX attestation_nonces_by_device ON attestation_nonces (tenant_id, device_id);
CREATE INDEX attestation_nonces_by_expiry ON attestation_nonces (expires_at);
