package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// LeaseName is the store lease whose holder drives rollouts.
const LeaseName = "rollouts"

// Defaults of Deps.
const (
	DefaultTick        = time.Second
	DefaultLeaderRetry = 5 * time.Second
	// DefaultPassInterval is the shortest time between two passes: the
	// kicks (reports, operators' changes, enrollments) that arrive
	// meanwhile are handled together by the next pass.
	DefaultPassInterval = 200 * time.Millisecond
	// DefaultStatusInterval is the shortest time between two publications
	// of one rollout's retained status for job changes; a change of the
	// rollout's own state or wave is published at once.
	DefaultStatusInterval = 250 * time.Millisecond
	// LeaderGrace is how long, at most, a new leader waits for the reports
	// of jobs in flight before it counts their deadlines (never longer than
	// a rollout's device timeout): reports a device sent while no control
	// plane listened arrive late, through its outbox.
	LeaderGrace = time.Minute
)

// Reason codes the engine gives jobs (beside the devices' wire.JobReason*).
const (
	JobReasonQuarantined = "QUARANTINED"  // attestation untrusted or stale
	JobReasonNotSelected = "NOT_SELECTED" // its labels no longer match the selector
	JobReasonRolledBack  = "ROLLED_BACK"  // an install job the device rolled back
)

// Deps is what an Engine is built from. Store is required.
type Deps struct {
	Store *store.Store
	// Packages resolves registry packages (default: StorePackages).
	Packages Packages
	// Publish publishes as the control plane with QoS 1 (nil: nothing is
	// published; tests of the bookkeeping).
	Publish func(topic string, payload []byte, retain bool) error
	Now     func() time.Time
	Log     *slog.Logger
	// Tick is the longest wait between two passes over the running
	// rollouts (default DefaultTick); kicks and due deadlines come sooner.
	Tick time.Duration
	// LeaderRetry is how often a replica that is not the leader tries to
	// become it (default DefaultLeaderRetry).
	LeaderRetry time.Duration
	// PassInterval is the shortest time between two passes (default
	// DefaultPassInterval): a pass costs O(jobs + devices) of the rollout,
	// so one per report would make a rollout O(devices²).
	PassInterval time.Duration
	// StatusInterval is the shortest time between two publications of a
	// rollout's status for job changes alone (default
	// DefaultStatusInterval); the latest is always published.
	StatusInterval time.Duration
	// Audit appends an entry to tenant's audit chain inside tx, for the
	// changes the engine decides itself (a threshold's pause, completion,
	// the end of a rollback; actor "rollouts"). Nil: not audited.
	Audit func(ctx context.Context, tx *store.Tx, tenant, action, target string, details map[string]any) error
}

// Engine drives rollouts: package doc.
type Engine struct {
	Deps

	wake   chan struct{}
	queues []chan reportMsg

	statusMu   sync.Mutex
	lastStatus map[rolloutKey][]byte
	// statuses holds the rollouts whose status waits for its next
	// publication (statusChanged), and when each was published last.
	statuses statusQueue

	mu          sync.Mutex
	leaderSince time.Time // zero while not leading
	// resync asks the leader to notify every open job again (Resync).
	resync atomic.Bool
}

type rolloutKey struct{ tenant, id string }

const (
	reportWorkers    = 2
	reportQueueDepth = 4096
	// resyncInterval is the shortest time between two passes that notify
	// every open job again to recover lost reports (see Resync).
	resyncInterval = 5 * time.Second
)

// New returns an engine; nothing runs until Run.
func New(d Deps) *Engine {
	if d.Store == nil {
		panic("rollout.New: Deps.Store is required")
	}
	if d.Packages == nil {
		d.Packages = StorePackages{Store: d.Store}
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.Log == nil {
		d.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if d.Tick <= 0 {
		d.Tick = DefaultTick
	}
	if d.LeaderRetry <= 0 {
		d.LeaderRetry = DefaultLeaderRetry
	}
	if d.PassInterval <= 0 {
		d.PassInterval = DefaultPassInterval
	}
	if d.StatusInterval <= 0 {
		d.StatusInterval = DefaultStatusInterval
	}
	e := &Engine{Deps: d, wake: make(chan struct{}, 1), lastStatus: map[rolloutKey][]byte{}, statuses: newStatusQueue()}
	for range reportWorkers {
		e.queues = append(e.queues, make(chan reportMsg, reportQueueDepth))
	}
	return e
}

// Kick makes the leader pass over the running rollouts now (after a
// report, an operator's change, an enrollment).
func (e *Engine) Kick() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Resync makes the leader notify again every released job that has no
// final report, as a new leader does (takeOver). Call it when reports may
// have been lost after the broker acknowledged them to the device: the
// control plane's broker connection came back (an external broker keeps
// no messages for a subscriber that is not connected, so reports sent
// between the broker's and the control plane's reconnects went nowhere).
// A device that finished answers with its final state again; one at work
// ignores it. The engine also asks for it when a report was dropped (its
// queue full, or the store failed). The leader honours it at most every
// resyncInterval. It never blocks.
func (e *Engine) Resync() {
	e.resync.Store(true)
	e.Kick()
}

// Leading reports whether this engine is the leader now.
func (e *Engine) Leading() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return !e.leaderSince.IsZero()
}

// Run handles job reports (on every replica) and, while it holds the
// leadership lease, drives the running rollouts, until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, q := range e.queues {
		wg.Go(func() { e.work(ctx, q) })
	}
	wg.Go(func() { e.publishStatuses(ctx) })
	for {
		lease, err := e.Store.TryLead(ctx, LeaseName)
		if err != nil && ctx.Err() == nil {
			e.Log.Warn("rollout engine: take the leadership lease", "error", err)
		}
		if lease != nil {
			e.lead(ctx, lease)
			lease.Release()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(e.LeaderRetry):
		}
	}
}

// lead drives rollouts until ctx ends or the lease is lost.
func (e *Engine) lead(ctx context.Context, lease *store.Lease) {
	e.mu.Lock()
	e.leaderSince = e.Now()
	e.mu.Unlock()
	defer func() {
		e.mu.Lock()
		e.leaderSince = time.Time{}
		e.mu.Unlock()
	}()
	e.Log.Info("rollout engine leading")
	e.resync.Store(false)
	e.takeOver(ctx)
	lastResync := time.Now()
	var lastPass time.Time
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-lease.Lost():
			e.Log.Warn("rollout engine lost its leadership lease; stepping down")
			return
		case <-t.C:
		case <-e.wake:
		}
		// Coalesce: every kick that arrives until the next pass starts is
		// handled by it. A pass reads every job and device of a rollout,
		// so one per report would cost O(devices²) per rollout.
		if d := e.PassInterval - time.Since(lastPass); d > 0 {
			select {
			case <-ctx.Done():
				return
			case <-lease.Lost():
				e.Log.Warn("rollout engine lost its leadership lease; stepping down")
				return
			case <-time.After(d):
			}
		}
		select {
		case <-e.wake: // covered by this pass
		default:
		}
		lastPass = time.Now()
		// Lost reports (Resync, a full report queue, a store failure)
		// are asked for again, at most every resyncInterval: each pass
		// notifies every open job, and the answers are more reports.
		if e.resync.Load() && time.Since(lastResync) >= resyncInterval {
			e.resync.Store(false)
			lastResync = time.Now()
			e.takeOver(ctx)
		}
		next := e.advanceAll(ctx)
		wait := e.Tick
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(e.Now()), 10*time.Millisecond))
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(wait)
	}
}

// takeOver publishes, for every unfinished rollout, the notification of
// each released job that has no final report — the process that released
// it may have died before it published, the device missed it, or the
// device's final report was lost on the way (taken while the store was
// unreachable, or published while no control plane was subscribed); a
// device fetches the job itself and answers a finished one with its final
// state again, so a repeated notification is harmless — and the retained
// status (a restarted embedded broker has lost it).
func (e *Engine) takeOver(ctx context.Context) {
	rs, err := e.Store.ListRolloutsInState(ctx, store.RolloutRunning, store.RolloutPaused, store.RolloutRollingBack)
	if err != nil {
		e.Log.Warn("rollout engine: list rollouts", "error", err)
		return
	}
	for _, r := range rs {
		jobs, err := e.Store.ListRolloutJobs(ctx, r.Tenant, r.ID)
		if err != nil {
			e.Log.Warn("rollout engine: list jobs", "tenant", r.Tenant, "rollout", r.ID, "error", err)
			continue
		}
		var send []store.RolloutDevice
		for _, j := range jobs {
			if j.State == store.JobNotified || j.State == store.JobInProgress {
				send = append(send, j)
			}
		}
		e.notify(send)
		e.publishStatus(ctx, r.Tenant, r.ID, true)
	}
}

// advanceAll advances every rollout that is running or rolling back and
// returns the earliest deadline ahead (zero: none).
func (e *Engine) advanceAll(ctx context.Context) time.Time {
	rs, err := e.Store.ListRolloutsInState(ctx, store.RolloutRunning, store.RolloutRollingBack)
	if err != nil {
		if ctx.Err() == nil {
			e.Log.Warn("rollout engine: list rollouts", "error", err)
		}
		return time.Time{}
	}
	var next time.Time
	for _, r := range rs {
		due, err := e.advance(ctx, r.Tenant, r.ID, r.FleetID)
		if err != nil {
			if ctx.Err() == nil {
				e.Log.Warn("rollout engine: advance", "tenant", r.Tenant, "rollout", r.ID, "error", err)
			}
			continue
		}
		if !due.IsZero() && (next.IsZero() || due.Before(next)) {
			next = due
		}
	}
	return next
}

// advance makes one pass over one rollout in one transaction, then
// publishes what the pass decided: notifications, events, the status.
func (e *Engine) advance(ctx context.Context, tenant, id, fleet string) (time.Time, error) {
	// The devices are read before the transaction, through a reader: the
	// pass never locked them (on PostgreSQL they could change under it
	// anyway), a change after this read is seen by the next pass (at most
	// a Tick later; a job released to a device revoked meanwhile gets no
	// key and is skipped by that pass), and SQLite's single writer is
	// held only for the jobs.
	devs, err := e.Store.ListRolloutCandidates(ctx, tenant, fleet)
	if err != nil {
		return time.Time{}, err
	}
	var p *pass
	err = e.Store.WithTx(ctx, func(tx *store.Tx) error {
		p = nil
		r, err := tx.LockRollout(ctx, tenant, id)
		if err != nil {
			return err
		}
		if r.State != store.RolloutRunning && r.State != store.RolloutRollingBack {
			return nil
		}
		if r.FleetID != fleet {
			return fmt.Errorf("rollout %s: fleet %s, not %s", id, r.FleetID, fleet)
		}
		jobs, err := tx.ListRolloutJobs(ctx, tenant, id)
		if err != nil {
			return err
		}
		e.mu.Lock()
		since := e.leaderSince
		e.mu.Unlock()
		p = &pass{e: e, ctx: ctx, tx: tx, r: r, now: e.Now().UTC(), leaderSince: since, jobs: jobs,
			devices: make(map[string]store.RolloutCandidate, len(devs)), order: make([]string, 0, len(devs))}
		for _, d := range devs {
			p.devices[d.ID] = d
			p.order = append(p.order, d.ID)
		}
		if err := p.run(); err != nil {
			return err
		}
		// Last in the transaction: an audit append holds the tenant's
		// audit lock until the commit.
		for _, a := range p.audits {
			if e.Audit != nil {
				if err := e.Audit(ctx, tx, tenant, a.action, id, a.details); err != nil {
					return fmt.Errorf("audit %s: %w", a.action, err)
				}
			}
		}
		return nil
	})
	if err != nil || p == nil {
		return time.Time{}, err
	}
	e.notify(p.notifies)
	e.publishEvents(p.events)
	switch {
	case p.moved:
		// The rollout's own state or wave: watchers see it at once
		// (and a finished rollout's last status is never left waiting).
		e.publishStatus(ctx, tenant, id, false)
	case p.changed:
		e.statusChanged(tenant, id)
	}
	return p.next, nil
}

// notify publishes JobNotify to the device of each job.
func (e *Engine) notify(jobs []store.RolloutDevice) {
	if e.Publish == nil {
		return
	}
	for _, j := range jobs {
		payload, _ := json.Marshal(wire.JobNotify{Schema: wire.JobNotifySchema, JobID: j.JobID})
		if err := e.Publish(mqttacl.CmdTopic(j.Tenant, j.DeviceID, "job"), payload, false); err != nil {
			// The device still finds the job: GET /api/v1/device/jobs on
			// (re)connect, or the notification of a retry.
			e.Log.Warn("job notification not published", "tenant", j.Tenant, "device", j.DeviceID, "job", j.JobID, "error", err)
		}
	}
}

// pass is one transaction's worth of decisions about one rollout.
type pass struct {
	e           *Engine
	ctx         context.Context
	tx          *store.Tx
	r           store.Rollout
	now         time.Time
	leaderSince time.Time
	devices     map[string]store.RolloutCandidate
	order       []string // device ids, oldest enrollment first
	jobs        []store.RolloutDevice

	notifies []store.RolloutDevice
	events   []Event
	audits   []auditEntry
	changed  bool // jobs or the rollout changed: the status may have
	moved    bool // the rollout's state or wave changed
	next     time.Time
}

type auditEntry struct {
	action  string
	details map[string]any
}

func (p *pass) run() error {
	switch p.r.State {
	case store.RolloutRunning:
		if err := p.reconcileInstalls(); err != nil {
			return err
		}
		if err := p.timeouts(); err != nil {
			return err
		}
		if paused, err := p.checkFailures(); err != nil || paused {
			return err
		}
		if paused, err := p.advanceWaves(); err != nil || paused {
			return err
		}
		if err := p.release(store.JobKindInstall); err != nil {
			return err
		}
		return p.checkCompleted()
	case store.RolloutRollingBack:
		if err := p.reconcileRollbacks(); err != nil {
			return err
		}
		if err := p.timeouts(); err != nil {
			return err
		}
		if err := p.release(store.JobKindRollback); err != nil {
			return err
		}
		return p.checkRolledBack()
	}
	return nil
}

func (p *pass) lastWave() int { return len(p.r.Waves) - 1 }

// event records an event of the rollout as it is now. A job becoming
// pending is no event (a rollout's first pass would announce every device).
func (p *pass) event(typ string, j *store.RolloutDevice, reason, detail string) {
	p.changed = true
	if j != nil && j.State == store.JobPending {
		return
	}
	ev := Event{Tenant: p.r.Tenant, RolloutID: p.r.ID, Type: typ, State: string(p.r.State), Wave: p.r.CurrentWave,
		Reason: reason, Detail: detail, At: p.now}
	if j != nil {
		ev.Device, ev.JobID, ev.Kind, ev.JobState, ev.Attempt = j.DeviceID, j.JobID, string(j.Kind), string(j.State), j.Attempt
		ev.Reason, ev.Detail = j.Reason, j.Detail
	}
	p.events = append(p.events, ev)
}

// save writes job i as next; if it changed meanwhile (a report), the
// fresh job replaces it and false is returned.
func (p *pass) save(i int, next store.RolloutDevice) (bool, error) {
	prev := p.jobs[i]
	saved, err := p.tx.SaveJob(p.ctx, next, prev.State, prev.Attempt)
	if errors.Is(err, store.ErrConflict) {
		fresh, gerr := p.tx.GetJob(p.ctx, prev.Tenant, prev.JobID)
		if gerr != nil {
			return false, gerr
		}
		p.jobs[i] = fresh
		return false, nil
	}
	if err != nil {
		return false, err
	}
	p.jobs[i] = saved
	p.event(EventJob, &saved, "", "")
	return true, nil
}

// eligible says whether device d may get a job of this rollout now, and
// if not, why.
func (p *pass) eligible(d store.RolloutCandidate, needSelector bool) (bool, string, string) {
	switch {
	case d.Status != store.DeviceEnrolled:
		return false, wire.JobReasonDeviceRevoked, "the device is revoked"
	case needSelector && !matches(p.r.Selector, d.Labels):
		return false, JobReasonNotSelected, "the device's labels no longer match the rollout's selector"
	case d.Quarantined:
		return false, JobReasonQuarantined, "the device is quarantined (attestation untrusted or stale)"
	}
	return true, "", ""
}

func matches(selector, labels map[string]string) bool {
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}

// waveOf is the wave of the device at rank k (from 0) among n eligible
// devices: wave i holds ranks below ceil(waves[i] × n / 100).
func waveOf(waves []int, k, n int) int {
	for i, pct := range waves {
		if k < (pct*n+99)/100 {
			return i
		}
	}
	return len(waves) - 1
}

// reconcileInstalls gives every device of the fleet that matches the
// selector an install job, and skips or resumes the pending ones as their
// devices' eligibility changes. The first assignment spreads the eligible
// devices over the waves (oldest enrollment first); devices that come
// later join the last wave.
func (p *pass) reconcileInstalls() error {
	have := map[string]bool{}
	for _, j := range p.jobs {
		if j.Kind == store.JobKindInstall {
			have[j.DeviceID] = true
		}
	}
	first := len(have) == 0
	var add []store.RolloutDevice
	var eligibleNew []string
	for _, id := range p.order {
		d := p.devices[id]
		if have[id] || d.Status != store.DeviceEnrolled || !matches(p.r.Selector, d.Labels) {
			continue
		}
		j := store.RolloutDevice{DeviceID: id, Kind: store.JobKindInstall, Wave: p.lastWave(), State: store.JobPending,
			PackageID: p.r.PackageID, PackageName: p.r.PackageName, PackageVersion: p.r.PackageVersion, PackageSize: p.r.PackageSize}
		if ok, reason, detail := p.eligible(d, true); !ok {
			j.State, j.Reason, j.Detail = store.JobSkipped, reason, detail
		} else {
			eligibleNew = append(eligibleNew, id)
		}
		add = append(add, j)
	}
	if first {
		rank := map[string]int{}
		for k, id := range eligibleNew {
			rank[id] = k
		}
		for i := range add {
			if k, ok := rank[add[i].DeviceID]; ok {
				add[i].Wave = waveOf(p.r.Waves, k, len(eligibleNew))
			}
		}
	}
	if len(add) > 0 {
		added, err := p.tx.AddRolloutJobs(p.ctx, p.r.Tenant, p.r.ID, add)
		if err != nil {
			return err
		}
		for _, j := range added {
			p.jobs = append(p.jobs, j)
			p.event(EventJob, &j, "", "")
		}
	}
	for i, j := range p.jobs {
		if j.Kind != store.JobKindInstall {
			continue
		}
		d, ok := p.devices[j.DeviceID]
		if !ok {
			continue
		}
		if err := p.reconcileJob(i, d, true); err != nil {
			return err
		}
	}
	return nil
}

// reconcileJob skips a pending job whose device is not eligible, makes a
// skipped one pending again when it is, and skips a released job of a
// revoked device (it can neither fetch nor report).
func (p *pass) reconcileJob(i int, d store.RolloutCandidate, needSelector bool) error {
	j := p.jobs[i]
	ok, reason, detail := p.eligible(d, needSelector)
	next := j
	switch {
	case j.State == store.JobPending && !ok:
		next.State, next.Reason, next.Detail = store.JobSkipped, reason, detail
	case j.State == store.JobSkipped && ok && j.Reason != wire.JobReasonDeviceRevoked:
		next.State, next.Reason, next.Detail = store.JobPending, "", ""
	case j.State.Released() && d.Status != store.DeviceEnrolled:
		next.State, next.Reason, next.Detail = store.JobSkipped, reason, detail
	default:
		return nil
	}
	_, err := p.save(i, next)
	return err
}

// reconcileRollbacks gives every device whose install succeeded a
// rollback job to the package it had before, and keeps quarantined and
// revoked devices' rollback jobs skipped.
func (p *pass) reconcileRollbacks() error {
	has := map[string]bool{}
	for _, j := range p.jobs {
		if j.Kind == store.JobKindRollback {
			has[j.DeviceID] = true
		}
	}
	var add []store.RolloutDevice
	for _, j := range p.jobs {
		if j.Kind != store.JobKindInstall || j.State != store.JobSucceeded || has[j.DeviceID] {
			continue
		}
		d, ok := p.devices[j.DeviceID]
		if !ok {
			continue
		}
		rb := store.RolloutDevice{DeviceID: j.DeviceID, Kind: store.JobKindRollback, Wave: j.Wave, State: store.JobPending,
			PackageName: j.PreviousName, PackageVersion: j.PreviousVersion}
		if j.PreviousName != "" {
			if ref, err := p.e.Packages.ResolvePackage(p.ctx, p.r.Tenant, j.PreviousName, j.PreviousVersion); err == nil {
				rb.PackageID, rb.PackageSize = ref.ID, ref.Size
			}
		}
		if ok, reason, detail := p.eligible(d, false); !ok {
			rb.State, rb.Reason, rb.Detail = store.JobSkipped, reason, detail
		}
		add = append(add, rb)
	}
	if len(add) > 0 {
		added, err := p.tx.AddRolloutJobs(p.ctx, p.r.Tenant, p.r.ID, add)
		if err != nil {
			return err
		}
		for _, j := range added {
			p.jobs = append(p.jobs, j)
			p.event(EventJob, &j, "", "")
		}
	}
	for i, j := range p.jobs {
		if j.Kind != store.JobKindRollback {
			continue
		}
		if d, ok := p.devices[j.DeviceID]; ok {
			if err := p.reconcileJob(i, d, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// timeouts notifies again the released jobs past their deadline, up to
// the rollout's retries, and then counts them as timed out (install jobs
// of a rollout that rolls back at once).
func (p *pass) timeouts() error {
	grace := p.leaderSince.Add(min(p.r.DeviceTimeout, LeaderGrace))
	for i, j := range p.jobs {
		if !j.State.Released() || j.DeadlineAt.IsZero() {
			continue
		}
		due := j.DeadlineAt
		if due.Before(grace) {
			due = grace
		}
		if p.now.Before(due) {
			if p.next.IsZero() || due.Before(p.next) {
				p.next = due
			}
			continue
		}
		next := j
		// Rolling back, an install job is not asked for again.
		retry := j.Attempt <= p.r.Retries && (j.Kind == store.JobKindRollback || p.r.State == store.RolloutRunning)
		if retry {
			next.State, next.Attempt, next.Reason, next.Detail = store.JobNotified, j.Attempt+1, "", ""
			next.NotifiedAt, next.DeadlineAt = p.now, p.now.Add(p.r.DeviceTimeout)
		} else {
			next.State, next.Reason = store.JobTimedOut, wire.JobReasonDeadline
			next.Detail = fmt.Sprintf("no final report within %s (attempt %d of %d)", wire.FormatDuration(p.r.DeviceTimeout), j.Attempt, p.r.Retries+1)
		}
		saved, err := p.save(i, next)
		if err != nil {
			return err
		}
		if saved && next.State == store.JobNotified {
			p.notifies = append(p.notifies, p.jobs[i])
			if p.next.IsZero() || next.DeadlineAt.Before(p.next) {
				p.next = next.DeadlineAt
			}
		}
	}
	return nil
}

// setState moves the rollout to state with reason and publishes the event
// typ.
func (p *pass) setState(state store.RolloutState, wave int, typ, reason, detail string) error {
	r, err := p.tx.SetRolloutProgress(p.ctx, p.r.Tenant, p.r.ID, p.r.State, store.RolloutProgress{
		State: state, CurrentWave: wave, Reason: reason, Detail: detail})
	if err != nil {
		return err
	}
	from := p.r.State
	p.r = r
	if typ != "" {
		p.event(typ, nil, reason, detail)
	}
	if action := map[string]string{EventPaused: "rollout.pause", EventCompleted: "rollout.complete",
		EventRolledBack: "rollout.rolled_back"}[typ]; action != "" {
		p.audits = append(p.audits, auditEntry{action, map[string]any{"from": from, "to": r.State, "wave": r.CurrentWave,
			"reason": reason, "detail": detail}})
	}
	p.changed, p.moved = true, true
	return nil
}

// checkFailures pauses the rollout when the devices that failed (among
// those of the waves released so far) reach the failure threshold — unless
// no device failed since an operator's resume acknowledged the failures.
func (p *pass) checkFailures() (bool, error) {
	waves := store.RolloutWaves(p.r, p.jobs)
	assigned, failed := 0, 0
	for i := 0; i <= p.r.CurrentWave && i < len(waves); i++ {
		assigned += waves[i].Size
		failed += waves[i].Failed
	}
	if failed == 0 || failed <= p.r.AckedFailures || failed*100 < p.r.FailureThreshold*assigned {
		return false, nil
	}
	detail := fmt.Sprintf("%d of %d devices failed (failure threshold %d%%)", failed, assigned, p.r.FailureThreshold)
	p.e.Log.Warn("rollout paused: failure threshold", "tenant", p.r.Tenant, "rollout", p.r.ID, "failed", failed, "devices", assigned)
	return true, p.setState(store.RolloutPaused, p.r.CurrentWave, EventPaused, store.RolloutReasonFailureThreshold, detail)
}

// advanceWaves starts the next wave while the current one met its success
// threshold, and pauses the rollout when every device of the current wave
// is done below it.
func (p *pass) advanceWaves() (bool, error) {
	waves := store.RolloutWaves(p.r, p.jobs)
	for p.r.CurrentWave < p.lastWave() {
		w := waves[p.r.CurrentWave]
		if w.PassedThreshold(p.r.SuccessThreshold) {
			if err := p.setState(store.RolloutRunning, p.r.CurrentWave+1, EventWaveStarted, "", ""); err != nil {
				return false, err
			}
			p.e.Log.Info("rollout wave started", "tenant", p.r.Tenant, "rollout", p.r.ID, "wave", p.r.CurrentWave)
			continue
		}
		if w.Done() {
			detail := fmt.Sprintf("wave %d finished with %d of %d devices succeeded (success threshold %d%%)",
				w.Index+1, w.Succeeded, w.Size, p.r.SuccessThreshold)
			p.e.Log.Warn("rollout paused: success threshold", "tenant", p.r.Tenant, "rollout", p.r.ID, "wave", w.Index)
			return true, p.setState(store.RolloutPaused, p.r.CurrentWave, EventPaused, store.RolloutReasonSuccessThreshold, detail)
		}
		break
	}
	return false, nil
}

// release notifies pending jobs of kind — install jobs of the waves
// started so far, earliest wave first — while fewer than max_concurrent
// jobs are in flight.
func (p *pass) release(kind store.JobKind) error {
	inFlight := 0
	for _, j := range p.jobs {
		if j.State.Released() {
			inFlight++
		}
	}
	for i, j := range p.jobs {
		if p.r.MaxConcurrent > 0 && inFlight >= p.r.MaxConcurrent {
			break
		}
		if j.Kind != kind || j.State != store.JobPending || (kind == store.JobKindInstall && j.Wave > p.r.CurrentWave) {
			continue
		}
		next := j
		next.State, next.Attempt, next.Reason, next.Detail = store.JobNotified, j.Attempt+1, "", ""
		next.NotifiedAt, next.DeadlineAt = p.now, p.now.Add(p.r.DeviceTimeout)
		saved, err := p.save(i, next)
		if err != nil {
			return err
		}
		if saved {
			inFlight++
			p.notifies = append(p.notifies, p.jobs[i])
			if p.next.IsZero() || next.DeadlineAt.Before(p.next) {
				p.next = next.DeadlineAt
			}
		}
	}
	return nil
}

// checkCompleted completes the rollout when its last wave has started and
// no install job is pending or in flight (skipped devices do not hold it
// up: they are reported as skipped).
func (p *pass) checkCompleted() error {
	if p.r.State != store.RolloutRunning || p.r.CurrentWave < p.lastWave() {
		return nil
	}
	var ok, failed, skipped int
	for _, j := range p.jobs {
		switch {
		case j.Kind != store.JobKindInstall:
		case j.State == store.JobPending || j.State.Released():
			return nil
		case j.State == store.JobSucceeded:
			ok++
		case j.State.Failure():
			failed++
		case j.State == store.JobSkipped:
			skipped++
		}
	}
	detail := fmt.Sprintf("%d succeeded, %d failed, %d skipped", ok, failed, skipped)
	p.e.Log.Info("rollout completed", "tenant", p.r.Tenant, "rollout", p.r.ID, "succeeded", ok, "failed", failed, "skipped", skipped)
	return p.setState(store.RolloutCompleted, p.r.CurrentWave, EventCompleted, "", detail)
}

// checkRolledBack finishes a rollback when no install job is in flight and
// every rollback job is done (or skipped).
func (p *pass) checkRolledBack() error {
	var ok, failed, skipped int
	for _, j := range p.jobs {
		if j.State == store.JobPending || j.State.Released() {
			return nil
		}
		if j.Kind != store.JobKindRollback {
			continue
		}
		switch {
		case j.State == store.JobSucceeded:
			ok++
		case j.State.Failure():
			failed++
		default:
			skipped++
		}
	}
	detail := fmt.Sprintf("%d rolled back, %d failed, %d skipped", ok, failed, skipped)
	p.e.Log.Info("rollout rolled back", "tenant", p.r.Tenant, "rollout", p.r.ID, "rolled_back", ok, "failed", failed, "skipped", skipped)
	return p.setState(store.RolloutRolledBack, p.r.CurrentWave, EventRolledBack, p.r.Reason, detail)
}
