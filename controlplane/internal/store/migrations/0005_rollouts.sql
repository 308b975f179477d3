-- Rollouts (issue 5): staged deployments of a registry package to a fleet,
-- the per-device jobs they create, and the job reports devices sent. Same
-- conventions as 0001 (BIGINT microseconds UTC, JSON as TEXT kept byte for
-- byte, composite tenant foreign keys).

-- One rollout of package_id to the devices of fleet_id that match selector
-- (a JSON object of labels, all of which must match). waves is a JSON array
-- of cumulative percentages, strictly increasing, ending at 100;
-- current_wave indexes it. The package columns are a copy of the registry's
-- record at creation, so the rollout reads the same whatever happens later;
-- the foreign key keeps the package from being deleted while a rollout
-- refers to it, and the fleet from being deleted under it. acked_failures is
-- the number of failed devices an operator's resume acknowledged (the
-- failure threshold pauses again only on a new failure). reason is a
-- machine-readable code (FAILURE_THRESHOLD, OPERATOR, …), detail its text.
CREATE TABLE rollouts (
	tenant_id         TEXT    NOT NULL REFERENCES tenants (id),
	id                TEXT    NOT NULL,
	package_id        TEXT    NOT NULL,
	package_name      TEXT    NOT NULL,
	package_version   TEXT    NOT NULL,
	package_size      BIGINT  NOT NULL,
	fleet_id          TEXT    NOT NULL,
	selector          TEXT    NOT NULL,
	waves             TEXT    NOT NULL,
	success_threshold INTEGER NOT NULL CHECK (success_threshold BETWEEN 0 AND 100),
	failure_threshold INTEGER NOT NULL CHECK (failure_threshold BETWEEN 0 AND 100),
	max_concurrent    INTEGER NOT NULL CHECK (max_concurrent >= 0),
	device_timeout_ms BIGINT  NOT NULL CHECK (device_timeout_ms > 0),
	retries           INTEGER NOT NULL CHECK (retries >= 0),
	state             TEXT    NOT NULL CHECK (state IN ('running', 'paused', 'completed', 'aborted', 'rolling_back', 'rolled_back')),
	current_wave      INTEGER NOT NULL DEFAULT 0 CHECK (current_wave >= 0),
	acked_failures    INTEGER NOT NULL DEFAULT 0 CHECK (acked_failures >= 0),
	reason            TEXT    NOT NULL DEFAULT '',
	detail            TEXT    NOT NULL DEFAULT '',
	created_by        TEXT    NOT NULL,
	created_at        BIGINT  NOT NULL,
	updated_at        BIGINT  NOT NULL,
	finished_at       BIGINT,
	PRIMARY KEY (tenant_id, id),
	FOREIGN KEY (tenant_id, fleet_id) REFERENCES fleets (tenant_id, id),
	FOREIGN KEY (tenant_id, package_id) REFERENCES packages (tenant_id, id)
);
-- The engine's scan of the rollouts it drives (every tenant).
CREATE INDEX rollouts_by_state ON rollouts (state);
CREATE INDEX rollouts_by_fleet ON rollouts (tenant_id, fleet_id);

-- One job of a rollout for one device: its install job, and after an
-- operator's rollback its rollback job. job_id names the job on the wire
-- (MQTT topics, GET /api/v1/device/jobs/{id}); attempt counts the
-- notifications (0: not released yet). The package columns are what the
-- job installs (install: the rollout's package; rollback: the package the
-- device had before, as far as its reports told; empty when unknown) and
-- are no foreign key: a rollback may name a package the registry does not
-- hold. previous_* is the package the device reported active before it
-- installed this job's; report_* the last report applied. Deleting the
-- device deletes its jobs.
CREATE TABLE rollout_devices (
	tenant_id         TEXT    NOT NULL,
	rollout_id        TEXT    NOT NULL,
	device_id         TEXT    NOT NULL,
	kind              TEXT    NOT NULL CHECK (kind IN ('install', 'rollback')),
	job_id            TEXT    NOT NULL,
	wave              INTEGER NOT NULL CHECK (wave >= 0),
	attempt           INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
	state             TEXT    NOT NULL CHECK (state IN ('pending', 'notified', 'in_progress', 'succeeded', 'failed',
	                                                   'refused', 'timed_out', 'skipped', 'cancelled')),
	reason            TEXT    NOT NULL DEFAULT '',
	detail            TEXT    NOT NULL DEFAULT '',
	package_id        TEXT    NOT NULL DEFAULT '',
	package_name      TEXT    NOT NULL DEFAULT '',
	package_version   TEXT    NOT NULL DEFAULT '',
	package_size      BIGINT  NOT NULL DEFAULT 0,
	report_state      TEXT    NOT NULL DEFAULT '',
	report_at         BIGINT,
	previous_name     TEXT    NOT NULL DEFAULT '',
	previous_version  TEXT    NOT NULL DEFAULT '',
	installed_name    TEXT    NOT NULL DEFAULT '',
	installed_version TEXT    NOT NULL DEFAULT '',
	created_at        BIGINT  NOT NULL,
	updated_at        BIGINT  NOT NULL,
	notified_at       BIGINT,
	deadline_at       BIGINT,
	finished_at       BIGINT,
	PRIMARY KEY (tenant_id, job_id),
	UNIQUE (tenant_id, rollout_id, device_id, kind),
	FOREIGN KEY (tenant_id, rollout_id) REFERENCES rollouts (tenant_id, id) ON DELETE CASCADE,
	FOREIGN KEY (tenant_id, device_id) REFERENCES devices (tenant_id, id) ON DELETE CASCADE
);
-- A device's open jobs (GET /api/v1/device/jobs, key-grant checks).
CREATE INDEX rollout_devices_by_device ON rollout_devices (tenant_id, device_id, state);

-- Every job report applied or refused once: the primary key de-duplicates
-- the at-least-once deliveries of a device's outbox (same job, attempt and
-- msg_id), also across control-plane restarts and replicas.
CREATE TABLE rollout_reports (
	tenant_id   TEXT    NOT NULL,
	job_id      TEXT    NOT NULL,
	attempt     INTEGER NOT NULL,
	msg_id      TEXT    NOT NULL,
	state       TEXT    NOT NULL,
	reason      TEXT    NOT NULL DEFAULT '',
	sent_at     BIGINT,
	received_at BIGINT  NOT NULL,
	PRIMARY KEY (tenant_id, job_id, attempt, msg_id),
	FOREIGN KEY (tenant_id, job_id) REFERENCES rollout_devices (tenant_id, job_id) ON DELETE CASCADE
);
