package install

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"

	bolt "go.etcd.io/bbolt"

	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// jobError ends a job: refused (nothing changed) or failed (attempted and
// undone: the slots are what they were before the job).
type jobError struct{ state, reason, detail string }

func (e *jobError) Error() string { return e.state + " (" + e.reason + "): " + e.detail }

const maxDetail = 1024

func endJob(state, reason, format string, args ...any) error {
	d := fmt.Sprintf(format, args...)
	if len(d) > maxDetail {
		d = strings.ToValidUTF8(d[:maxDetail], "")
	}
	return &jobError{state: state, reason: reason, detail: d}
}

func refuse(reason, format string, args ...any) error {
	return endJob(wire.JobRefused, reason, format, args...)
}

func fail(reason, format string, args ...any) error {
	return endJob(wire.JobFailed, reason, format, args...)
}

var (
	// errCrash stops the pipeline at a test checkpoint, as a SIGKILL would.
	errCrash = errors.New("install: stopped at a test checkpoint")
	// errStorage wraps failures of the state store, which end Run.
	errStorage = errors.New("install: state store")
)

// checkpoint is a place where a SIGKILL is simulated in tests.
func (in *Installer) checkpoint(point string) error {
	if in.cfg.hook != nil && in.cfg.hook(point) {
		return fmt.Errorf("%w %s", errCrash, point)
	}
	return nil
}

func (in *Installer) update(fn func(*bolt.Tx) error) error {
	if err := in.cfg.Store.Update(fn); err != nil {
		return fmt.Errorf("%w: %w", errStorage, err)
	}
	return nil
}

func (in *Installer) view(fn func(*bolt.Tx) error) error {
	if err := in.cfg.Store.View(fn); err != nil {
		return fmt.Errorf("%w: %w", errStorage, err)
	}
	return nil
}

// rank orders the states of the pipeline; every terminal state ranks last.
func rank(state string) int {
	if wire.JobTerminal(state) {
		return 100
	}
	for i, s := range []string{wire.JobReceived, wire.JobDownloading, wire.JobVerifying, wire.JobPolicy,
		wire.JobKeyGrant, wire.JobInstalling, wire.JobSelfTest} {
		if s == state {
			return i
		}
	}
	return -1
}

var packageIDRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// accept records a job the control plane sent. A new job starts at
// received. A finished job is never run again (docs/rollouts.md): asked
// about again explicitly (a notification), or under a new attempt (the
// control plane's deadline passed before it heard the end), its final
// state is reported again, under the job's latest attempt. A job in
// progress carries on under a new attempt.
func (in *Installer) accept(job wire.Job, explicit bool) error {
	if !mqttacl.ValidID(job.ID) {
		in.log.Warn("job with an invalid id ignored", "job", job.ID)
		return nil
	}
	var fresh *jobRecord
	err := in.update(func(tx *bolt.Tx) error {
		rec, err := getJob(tx, job.ID)
		if err != nil {
			return err
		}
		switch {
		case rec == nil:
			seq, err := sub(tx, bucketJobs).NextSequence()
			if err != nil {
				return err
			}
			fresh = &jobRecord{Seq: seq, Job: job, State: wire.JobReceived, UpdatedAt: in.cfg.Now().UTC()}
			return putJob(tx, fresh)
		case job.Attempt > rec.Job.Attempt, explicit && wire.JobTerminal(rec.State):
			rec.Job.Attempt = max(rec.Job.Attempt, job.Attempt)
			rec.Reported = ""
			return putJob(tx, rec)
		}
		return nil
	})
	if err != nil || fresh == nil {
		return err
	}
	in.log.Info("job received", "job", job.ID, "kind", job.Kind, "package", job.Package.Name, "version", job.Package.Version, "attempt", job.Attempt)
	if err := in.checkpoint("persisted:" + wire.JobReceived); err != nil {
		return err
	}
	return in.reportState(fresh)
}

// processOpen runs every non-terminal job, oldest first, to its end.
func (in *Installer) processOpen(ctx context.Context) error {
	for {
		var next *jobRecord
		err := in.view(func(tx *bolt.Tx) error {
			jobs, err := listJobs(tx)
			for _, r := range jobs {
				if !wire.JobTerminal(r.State) {
					next = r
					break
				}
			}
			return err
		})
		if err != nil || next == nil {
			return err
		}
		if err := in.process(ctx, next); err != nil {
			return err
		}
	}
}

// process runs one job to a terminal state, or returns the error that
// stopped it (context, storage, test checkpoint) with its state persisted.
func (in *Installer) process(ctx context.Context, rec *jobRecord) error {
	// A job never reaches here in installing or self_test: recover ends
	// those at start, and any error that stops a job mid-way ends Run.
	err := in.validateJob(rec.Job)
	if err == nil && rec.Job.Kind == wire.JobRollback {
		err = in.rollbackJob(ctx, rec)
	} else if err == nil {
		err = in.installJob(ctx, rec)
	}
	var je *jobError
	if errors.As(err, &je) {
		return in.finish(rec, je)
	}
	return err
}

func (in *Installer) validateJob(job wire.Job) error {
	switch job.Kind {
	case wire.JobInstall:
		ref := job.Package
		if !packageIDRE.MatchString(ref.ID) {
			return refuse(wire.JobReasonMalformed, "package id %q is not a lowercase hex SHA-256", ref.ID)
		}
		if ref.Size <= 0 {
			return refuse(wire.JobReasonMalformed, "package size %d", ref.Size)
		}
		if ref.Size > in.cfg.MaxPackageBytes {
			return refuse(wire.JobReasonDownload, "package of %d bytes exceeds this device's limit of %d (install.max_package_bytes)", ref.Size, in.cfg.MaxPackageBytes)
		}
	case wire.JobRollback:
	default:
		return refuse(wire.JobReasonInternal, "job kind %q is not supported by this agent", job.Kind)
	}
	return nil
}

// interrupted is the rule for a job found in installing or self_test after
// a restart: an interrupted activation is never retried in place (the
// model may be what killed the agent); after activation the previous slot
// comes back (Mender's rule). Only the commit transaction proves a passed
// self-test.
func interrupted(rec *jobRecord) *jobError {
	if rec.State == wire.JobSelfTest {
		return &jobError{wire.JobFailed, wire.JobReasonSelfTest, "the agent stopped before the self-test completed; the previous slot is active again"}
	}
	return &jobError{wire.JobFailed, wire.JobReasonActivation, "the agent stopped while loading the model; an interrupted activation is not retried in place"}
}

// installJob: download → verify → policy → key grant → load → activate →
// self-test → commit.
func (in *Installer) installJob(ctx context.Context, rec *jobRecord) error {
	if err := in.advance(rec, wire.JobDownloading); err != nil {
		return err
	}
	path, err := in.download(ctx, rec)
	if err != nil {
		return err
	}
	if err := in.checkpoint("download:complete"); err != nil {
		return err
	}

	if err := in.advance(rec, wire.JobVerifying); err != nil {
		return err
	}
	trust := parsePublishers(rec.Job.Publishers)
	if len(trust) == 0 {
		return refuse(wire.JobReasonPublisher, "the job pins no usable publisher key")
	}
	now := in.cfg.Now()
	pkg, f, err := in.openVerified(ctx, path, trust, now)
	if err != nil {
		return err
	}
	defer f.Close()
	slots, err := in.slots()
	if err != nil {
		return err
	}
	if err := in.checkInstallable(pkg, rec.Job.Package, slots); err != nil {
		return err
	}

	if err := in.advance(rec, wire.JobPolicy); err != nil {
		return err
	}
	if err := in.evaluatePolicy(ctx, pkg, rec, slots, trust); err != nil {
		return err
	}

	if err := in.advance(rec, wire.JobKeyGrant); err != nil {
		return err
	}
	dek, err := in.openGrant(ctx, pkg, rec)
	if err != nil {
		return err
	}

	if err := in.advance(rec, wire.JobInstalling); err != nil {
		return err
	}
	var pub []byte
	for _, k := range trust {
		if k.KeyID() == pkg.Manifest.PublisherKeyID {
			pub = k.MarshalPEM()
		}
	}
	slot := &Slot{
		Name: pkg.Manifest.Name, Version: pkg.Manifest.Version, PackageID: rec.Job.Package.ID, Path: filepath.Base(path),
		Publisher: pub, VerifiedAt: now.UTC(), Grant: rec.Grant, JobID: rec.Job.ID,
	}
	lm, st, err := in.load(pkg, dek, slot)
	if err != nil {
		return err
	}
	if err := in.checkpoint("model:loaded"); err != nil {
		return err
	}
	return in.activateAndTest(rec, lm, st)
}

// rollbackJob makes the previous slot active again, self-tested like a new
// install. Anti-rollback does not apply: the previous slot is the one
// package below the high-water mark the device keeps, and only an
// operator's rollback job returns to it.
func (in *Installer) rollbackJob(ctx context.Context, rec *jobRecord) error {
	slots, err := in.slots()
	if err != nil {
		return err
	}
	ref := rec.Job.Package
	named := ref.ID != "" || ref.Name != ""
	if named && slots.Active != nil && slots.Active.matches(ref) {
		in.log.Info("rollback target already active", "job", rec.Job.ID, "name", ref.Name, "version", ref.Version)
		return in.conclude(rec, wire.JobRolledBack)
	}
	prev := slots.Previous
	if prev == nil {
		return refuse(wire.JobReasonNoPrevious, "the device has no previous slot")
	}
	if named && !prev.matches(ref) {
		return refuse(wire.JobReasonNoPrevious, "the previous slot holds %s %s (%s), not the package named", prev.Name, prev.Version, prev.PackageID)
	}
	if err := in.advance(rec, wire.JobInstalling); err != nil {
		return err
	}
	lm, st, err := in.loadSlot(ctx, prev)
	if err != nil {
		var je *jobError
		if errors.As(err, &je) {
			return fail(je.reason, "previous slot: %s", je.detail)
		}
		return err
	}
	if err := in.checkpoint("model:loaded"); err != nil {
		return err
	}
	return in.activateAndTest(rec, lm, st)
}

func (s *Slot) matches(ref wire.PackageRef) bool {
	if ref.ID != "" {
		return s.PackageID == ref.ID
	}
	return s.Name == ref.Name && (ref.Version == "" || s.Version == ref.Version)
}

// activateAndTest makes lm's slot active on trial, runs the self-test, and
// commits or rolls back.
func (in *Installer) activateAndTest(rec *jobRecord, lm *loadedModel, st *SelfTest) error {
	if err := in.activate(rec, &lm.slot); err != nil {
		return err
	}
	err := runSelfTest(lm.model, st)
	if err == nil {
		err = faultSelfTest() // nil unless built with the faultinject tag
	}
	if err != nil {
		if cerr := lm.model.Close(); cerr != nil {
			in.log.Warn("close model", "err", cerr)
		}
		if err := in.checkpoint("selftest:failed"); err != nil {
			return err
		}
		return fail(wire.JobReasonSelfTest, "%v", err)
	}
	if err := in.checkpoint("selftest:passed"); err != nil {
		return err
	}
	return in.commit(rec, lm)
}

// activate is one transaction: slot becomes the active slot on trial, the
// active one becomes previous, the job moves to self_test and remembers
// the slots to restore.
func (in *Installer) activate(rec *jobRecord, slot *Slot) error {
	err := in.update(func(tx *bolt.Tx) error {
		cur, err := getSlots(tx)
		if err != nil {
			return err
		}
		trial := *slot
		trial.Committed = false
		trial.ActivatedAt = in.cfg.Now().UTC()
		rec.Slot, rec.Restore = &trial, &cur
		rec.State, rec.UpdatedAt = wire.JobSelfTest, trial.ActivatedAt
		if err := putSlots(tx, slotPair{Active: &trial, Previous: cur.Active}); err != nil {
			return err
		}
		return putJob(tx, rec)
	})
	if err != nil {
		return err
	}
	*slot = *rec.Slot
	if err := in.checkpoint("persisted:" + wire.JobSelfTest); err != nil {
		return err
	}
	return in.reportState(rec)
}

// commit is one transaction: the trial slot is committed, the package's
// high-water mark raised (installs only), the job terminal. Then the new
// model serves and the old one is closed.
func (in *Installer) commit(rec *jobRecord, lm *loadedModel) error {
	final := wire.JobCommitted
	if rec.Job.Kind == wire.JobRollback {
		final = wire.JobRolledBack
	}
	err := in.update(func(tx *bolt.Tx) error {
		cur, err := getSlots(tx)
		if err != nil {
			return err
		}
		if cur.Active == nil || cur.Active.Path != rec.Slot.Path || cur.Active.JobID != rec.Slot.JobID {
			return fmt.Errorf("commit job %s: the active slot is not the job's", rec.Job.ID)
		}
		cur.Active.Committed = true
		if final == wire.JobCommitted {
			if err := raiseHighest(tx, cur.Active.Name, cur.Active.Version); err != nil {
				return err
			}
		}
		rec.Slot = cur.Active
		rec.State, rec.Reason, rec.Detail, rec.UpdatedAt = final, "", "", in.cfg.Now().UTC()
		if err := putSlots(tx, cur); err != nil {
			return err
		}
		if err := putJob(tx, rec); err != nil {
			return err
		}
		return pruneJobs(tx)
	})
	if err != nil {
		return err
	}
	lm.slot = *rec.Slot
	in.serve(lm)
	in.log.Info("job "+final, "job", rec.Job.ID, "name", lm.slot.Name, "version", lm.slot.Version)
	if err := in.checkpoint("persisted:" + final); err != nil {
		return err
	}
	in.gc()
	return in.reportState(rec)
}

// raiseHighest records version as committed for name unless a higher one
// was committed before.
func raiseHighest(tx *bolt.Tx, name, version string) error {
	v, err := tgsp.ParseVersion(version)
	if err != nil {
		return err
	}
	if h := getHighest(tx, name); h != "" {
		hv, err := tgsp.ParseVersion(h)
		if err == nil && v.Compare(hv) <= 0 {
			return nil
		}
	}
	return putHighest(tx, name, version)
}

// finish ends a job with je in one transaction; a job that had activated
// its slot (state self_test) puts the slots back as they were.
func (in *Installer) finish(rec *jobRecord, je *jobError) error {
	restored := false
	err := in.update(func(tx *bolt.Tx) error {
		if rec.State == wire.JobSelfTest && rec.Restore != nil {
			if err := putSlots(tx, *rec.Restore); err != nil {
				return err
			}
			restored = true
		}
		rec.State, rec.Reason, rec.Detail, rec.UpdatedAt = je.state, je.reason, je.detail, in.cfg.Now().UTC()
		if err := putJob(tx, rec); err != nil {
			return err
		}
		return pruneJobs(tx)
	})
	if err != nil {
		return err
	}
	in.log.Warn("job "+je.state, "job", rec.Job.ID, "reason", je.reason, "detail", je.detail, "rolled_back", restored)
	if err := in.checkpoint("persisted:" + je.state); err != nil {
		return err
	}
	in.gc()
	return in.reportState(rec)
}

// conclude ends a job that had nothing to change.
func (in *Installer) conclude(rec *jobRecord, state string) error {
	err := in.update(func(tx *bolt.Tx) error {
		rec.State, rec.UpdatedAt = state, in.cfg.Now().UTC()
		if err := putJob(tx, rec); err != nil {
			return err
		}
		return pruneJobs(tx)
	})
	if err != nil {
		return err
	}
	return in.reportState(rec)
}
