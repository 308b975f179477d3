// Package state is the agent's durable store: one bbolt file
// (/var/lib/tensorguard/agent/agent.db by default) holding the device identity, the
// MQTT session counter, a small generic key/value space, and the buckets that
// other subsystems own (the outbox, the install pipeline's jobs and slots).
//
// Guarantees:
//
//   - Exclusive: a second process opening the same file fails within
//     Options.LockTimeout with ErrLocked instead of hanging.
//   - Durable: every mutation is one bbolt read-write transaction; it has been
//     fsynced when the method returns (NoSync is never set).
//   - Versioned: the "meta" bucket records the schema version. Open migrates an
//     older file forward inside a single transaction (all or nothing) and
//     refuses a newer one with ErrNewerSchema, so a downgraded agent never
//     misreads state written by a newer one. A file written by every released
//     schema version lives in testdata/ and is opened by the tests.
//   - Never panics on a damaged file: a truncated, garbage or internally
//     inconsistent file is reported as ErrCorrupt, naming the file.
//
// Buckets at schema version 1:
//
//	meta       schema_version (uint64, big endian), created_at (RFC 3339)
//	identity   "current": Identity as JSON
//	session    "counter": uint64, big endian
//	kv         one nested bucket per namespace (see Put, Get, Delete)
//
// Bucket names reserved for other packages, which create and version their own
// contents through Update and View: "outbox" (package outbox), "install"
// (package install: jobs, the A/B slots, anti-rollback marks).
package state
