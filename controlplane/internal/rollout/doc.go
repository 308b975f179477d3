// Package rollout is the control plane's rollout engine (issue 5): it
// deploys a registry package to the devices of a fleet in cumulative waves,
// gated by success and failure thresholds (hawkBit's rollout groups), with
// a bound on jobs in flight, per-device timeouts and retries (AWS IoT
// Jobs), and operator pause, resume, abort and rollback. docs/rollouts.md
// is the operator's view; this comment is the contract.
//
// # Model
//
// A rollout (store.Rollout) targets the enrolled devices of one fleet
// whose labels include every label of its selector. Each such device gets
// one install job (store.RolloutDevice). A device is eligible while it is
// enrolled, matches the selector and is not quarantined (its attestation
// verdict is untrusted or stale); a device that is not gets or keeps its
// job in state skipped (reason QUARANTINED, NOT_SELECTED or
// DEVICE_REVOKED), which turns pending again when it is eligible again
// while the rollout runs — a revoked device never is.
//
// Waves are cumulative percentages ("5,25,100"). On its first pass the
// engine ranks the eligible devices (oldest enrollment first) and puts the
// device of rank k (from 0) in the first wave i with k < ceil(waves[i] × n
// / 100), n the number of eligible devices; quarantined devices start
// skipped in the last wave. Devices that enroll into the fleet (or come to
// match the selector) later join the last wave: they get the package when
// the rollout reaches its full extent, at once if it already has. An empty
// wave passes at once.
//
// # Job states
//
//	pending → notified → in_progress → succeeded | failed | refused | timed_out
//	pending ⇄ skipped       pending, notified → cancelled (abort, rollback)
//
// Releasing a job sets attempt 1 and a deadline (now + device_timeout) and
// publishes wire.JobNotify on the device's cmd/job topic; the device
// fetches the job itself (GET /api/v1/device/jobs/{id}) and reports on
// its jobs/<job id> topic. A job whose deadline passes without a final
// report is notified again with attempt+1 and a new deadline, up to
// retries times, and then is timed_out (reason DEADLINE). A failed or
// refused report is final: it is not retried. At most max_concurrent jobs
// (0: no bound) are in flight (notified or in progress) at once; pending
// jobs are released earliest wave first.
//
// # Thresholds and states
//
// The engine starts wave i+1 as soon as succeeded(i) × 100 ≥
// success_threshold × size(i), size counting the wave's jobs that are
// neither skipped nor cancelled (devices still in flight in wave i go on).
// It pauses the rollout (reason FAILURE_THRESHOLD) when the failed,
// refused and timed-out jobs of the waves released so far reach
// failure_threshold per cent of those waves' jobs — at the first failure
// when the threshold is 0 — and (reason SUCCESS_THRESHOLD) when every job
// of the current wave is done but too few succeeded. A rollout whose last
// wave has started and has no install job pending or in flight is
// completed; skipped devices do not hold it up.
//
//	running ⇄ paused → aborted           running, paused, completed, aborted → rolling_back → rolled_back
//	running → completed
//
// Operators pause (no new job is released; jobs in flight go on, and
// their deadlines wait for the resume), resume (the failures so far are
// acknowledged: the failure threshold pauses again only on a further
// failure; and a current wave that finished below its success threshold
// is passed — resuming is the decision to go on), abort (final; install
// jobs not yet started — pending, notified without a report, skipped — are
// cancelled: a device fetching one gets 410 JOB_CANCELLED, and key grants
// for the rollout stop; jobs in progress finish and are recorded, but an
// aborted rollout has no deadlines: a device that never reports stays in
// progress) and roll back (jobs not yet started are cancelled as for
// abort; install jobs still in flight are not retried; every device
// whose install succeeded, also later, gets a rollback job, wire.JobRollback,
// naming the package its reports showed active before — empty when
// unknown; rolled_back when all of them are done). Rollback jobs follow
// max_concurrent, device_timeout and retries too; their failures pause
// nothing.
//
// # Reports
//
// HandleMessage takes device reports from the broker (in process, or
// through the external-broker connection) without blocking and hands them
// to workers sharded by device. Tenant, device and job come from the
// topic; the report must name the same job, a known state and an attempt
// that was released. A report for another device's job is ignored and
// logged. Each report is recorded once per (job, attempt, msg_id) in the
// database — duplicates from a device's at-least-once outbox, also across
// restarts and replicas, are dropped there — and moves the job along in
// the same transaction: progress makes it in_progress (the last report
// state never moves backwards), a final report gives it its outcome once;
// after that nothing changes it. Progress of an earlier attempt is
// ignored, but its final report counts (the device did finish). Counts are
// always computed from the job rows, never kept as counters, so nothing is
// counted twice, whatever the order or repetition of reports.
//
// # Persistence and leadership
//
// Everything is in the database; the engine holds no state a restart
// loses. One replica drives rollouts: the holder of the store lease
// "rollouts" (a PostgreSQL advisory lock; always granted on SQLite). It
// passes over the running rollouts when kicked (Kick: a report, an
// operator's change, an enrollment), at most every Deps.PassInterval
// (200 ms) — the kicks that arrive meanwhile are handled by one pass, since
// a pass reads every job and device of a rollout: one per report would
// make a rollout O(devices²) — and at least every Deps.Tick. A pass reads
// the fleet's devices (store.ListRolloutCandidates: no keys) outside its
// transaction — a device that changes after that read is seen by the next
// pass — and then, in one transaction that locks the rollout's row, its
// jobs; job changes are conditional on the state and attempt read
// (store.SaveJob), so the engine, report handlers on any replica and
// operators never overwrite each other. Notifications and events are
// published after the commit; a new leader first publishes the
// notification of every released job without a final report (the old
// leader may have died in between, or a final report may have been lost:
// taken while the store was unreachable) and the status of every
// unfinished rollout, and gives jobs in flight min(device_timeout,
// LeaderGrace) before counting their deadlines, since reports sent while no
// control plane listened arrive late. [Engine.Resync] does the same
// notifications when the control plane's connection to an external broker
// comes back: reports published while it was not subscribed are gone, and
// a device answers the notification of a finished job with its final
// state again.
//
// # Audit
//
// Operators' changes are audited by the API; the engine's own decisions —
// a threshold's pause, completion, the end of a rollback — through
// Deps.Audit in the transaction of the change (actor "rollouts"), as
// rollout.pause, rollout.complete and rollout.rolled_back.
//
// # Events
//
// Every change is published as an Event (schema tg.rollout.event.v1, QoS 1,
// not retained) on tg/v1/<tenant>/rollouts/<id>/events, and the rollout's
// summary as a Status (schema tg.rollout.status.v1, retained) on
// tg/v1/<tenant>/rollouts/<id>/status whenever it changes: at once when the
// rollout's state or wave changes, and for job changes alone at most every
// Deps.StatusInterval (250 ms) per rollout, with the counts of that moment
// (store.CountRolloutJobs, one aggregate query); the latest is always
// published, the ones still waiting also when Run returns. Operator MQTT
// credentials read both (they read their tenant's topics).
//
// # Key grants
//
// Engine implements registry.GrantAuthorizer (Authorize), which the
// registry's key-grant route asks, and PackageInUse its InUseFunc: a device
// gets the key of package P only for a job of its own that is about P and
// in flight, in a rollout that still wants it (running or paused for an
// install job; rolling back for a rollback job), while it is enrolled, in
// the rollout's fleet and not quarantined.
package rollout
