// Package store is the control plane's database: tenants, operators and
// their API keys, fleets, devices, enrollment tokens, each tenant's CA and
// issued certificates, the per-tenant audit chain, and fleet attestation
// (per-device verdicts and verifier state, verdict history, challenge
// nonces), and the package registry (publishers, the control plane's
// per-tenant recipient key, package records; the files are in a blob store).
//
// # Backends
//
// [Open] takes a DATABASE_URL. postgres:// and postgresql:// URLs use
// PostgreSQL through pgx's database/sql driver (the choice for several
// control-plane replicas); sqlite://PATH, file:PATH or a bare path use an
// embedded SQLite file through modernc.org/sqlite (the single-node default).
// One schema serves both: every query is written once with ? placeholders
// (rebound to $n for PostgreSQL) and every store test runs on both backends.
//
// SQLite runs in WAL mode with foreign keys on and a busy timeout. All writes
// go through a single connection whose transactions begin IMMEDIATE, so
// writers queue in the process instead of failing with SQLITE_BUSY, while
// reads use a separate pool of read-only connections. A consequence: inside
// [Store.WithTx] use only the *Tx, never the *Store, or the transaction waits
// for the connection it holds itself (until ctx ends).
//
// # Schema and migrations
//
// Migrations are embedded SQL files, migrations/NNNN_name.sql, applied in
// order inside one transaction and recorded in schema_migrations. A file in
// migrations/sqlite/ or migrations/postgres/ with the same number replaces the
// shared one for that dialect; none is needed so far. Open refuses a database
// whose schema is newer than this binary ([ErrSchemaTooNew]) instead of
// writing to tables it does not understand. On PostgreSQL an advisory lock
// serialises replicas that start at the same time.
//
// Column types are chosen to behave the same on both engines: times are
// BIGINT microseconds since the Unix epoch (UTC), so values round-trip at
// microsecond precision, which every method returns in UTC; JSON (labels,
// policies, audit details) is TEXT and comes back byte for byte — JSONB would
// re-encode it and break the audit hashes computed over it; binary values
// are BYTEA, which SQLite stores unchanged as blobs.
//
// # Tenant isolation
//
// Every method on tenant-owned data takes the tenant id first and every one
// of its queries filters on it, so a row of another tenant is simply
// [ErrNotFound] — for reads, updates and deletes alike. The schema backs this
// up: references between tenant-owned rows are composite (tenant_id, id)
// foreign keys, so a device cannot point at another tenant's fleet even
// through a bug. The only lookups not keyed by tenant are the ones that
// establish it from a secret: [Store.AuthenticateAPIKey] and the enrollment
// token lookups.
//
// # Secrets
//
// API keys (tgk_<key id>_<secret>) and enrollment tokens
// (tgt_<token id>_<secret>) carry 256 random bits. The store keeps only
// SHA-256 of the secret and compares in constant time after finding the row
// by id. A slow password hash (argon2) is unnecessary for secrets that cannot
// be guessed and would cost every API request tens of milliseconds; SHA-256
// is enough to make a leaked database useless for authentication. Wrapped
// tenant DEKs, CA keys and recipient keys are opaque blobs produced by the
// key envelope; the store never sees them unwrapped.
//
// # Attestation
//
// Per device: the current verdict with the verifier's state (TPM counters of
// the last trusted quote, baseline PCRs) and the quarantine flag, which
// [Device] also carries; a verdict history trimmed to the newest N entries
// ([WithAttestationHistory]); and challenge nonces, of which only SHA-256 is
// kept and which one conditional UPDATE consumes, so a nonce is single-use
// across replicas. All of it is deleted with the device. [Store.PruneNonces]
// is the one maintenance sweep that spans tenants. Read-modify-write a
// device's state inside [Store.WithTx]: there [Tx.GetAttestationState] locks
// the row on PostgreSQL.
//
// # Rollouts
//
// A rollout (migration 0005) keeps a copy of its package's name, version
// and size and refers to the package and the fleet by composite foreign
// keys without cascade, so neither can be deleted while a rollout refers
// to it (ErrConflict). Its jobs (one per device and kind, RolloutDevice)
// cascade with the rollout and with the device; the reports devices sent
// (RecordJobReport) are kept once per (job, attempt, msg_id), which is
// what makes report handling idempotent across restarts and replicas.
// Job changes are conditional ([Store.SaveJob] writes only if the job is
// still in the state and attempt the caller read; otherwise ErrConflict),
// the operator transitions lock the rollout ([Store.LockRollout]) and
// refuse a state that does not allow them ([ErrRolloutState]), and
// [RolloutWaves] counts a rollout's jobs per wave from the rows, never
// from counters. [Store.ListRolloutsInState] is the rollout engine's scan
// and, like PruneNonces, spans tenants.
//
// # Policy bundles
//
// Migration 0006: each tenant's policy signing key (public key, and the
// private key sealed like the CA's), and each fleet's signed bundles with
// a head row per fleet. [Store.NextPolicyRevision] hands out 1, 2, 3, … by
// an upsert of the head, which serialises pushes to one fleet (row lock on
// PostgreSQL) and never reuses a number. Both cascade with the fleet.
//
// # Leases
//
// [Store.TryLead] takes a named lease for a task that must run on one
// replica at a time (the rollout engine): a session-level advisory lock on
// a dedicated PostgreSQL connection, which the database releases when the
// session ends, so a crashed leader frees it; [Lease.Lost] reports a lost
// connection. On SQLite (one node) every lease is granted.
//
// # Transactions and audit
//
// [Store.WithTx] runs a function in one transaction; [Tx] has the same data
// methods as [Store], so a mutation and its audit row commit together.
// [Store.AppendAudit] serialises appends per tenant with a row lock on the
// tenant's audit head (a plain write lock on SQLite), hands the callback the
// previous entry so it can chain hashes, and stores what it returns; sequence
// numbers are contiguous from 1. Call it last in a transaction: it holds the
// tenant's audit lock until commit.
package store
