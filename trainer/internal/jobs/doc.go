// Package jobs is TG-Tinker's durable job queue: training clients, the
// futures of the operations submitted to them, and each client's sealed
// model state, in the control plane's database (SQLite or PostgreSQL).
//
// Guarantees:
//
//   - Accepted work is never lost: a future is stored (queued) before its
//     id is returned, and a future that was running when its worker died
//     goes back to the queue once its lease expires (LeaseFor); the state
//     it would have changed is only ever written together with the
//     future's result, in one transaction (Finish), so a re-run starts
//     from the state the interrupted run started from.
//   - Strict order per client: futures of one client run one at a time in
//     the order they were submitted (their seq). A worker claims only the
//     lowest unfinished seq of a client, and only when no other future of
//     that client is running; so a synchronous call, which is a future the
//     SDK waits for, never overtakes queued work.
//   - Idempotent retries: a submission carrying an idempotency key that
//     was used before returns the first future, if the request is the same
//     (by SHA-256), and ErrConflict otherwise.
//   - Cancel: a queued future is cancelled at once; a running one is marked
//     and its worker stops at the next check, discarding its changes.
//   - Results expire: finished futures carry expires_at and are deleted by
//     Prune after it (the API answers 410 for an expired id).
//   - Tenants are isolated: every read takes the tenant, and an id of
//     another tenant is ErrNotFound.
//
// Payloads (requests, results, states) are sealed by the caller before
// they get here; this package stores bytes.
package jobs
