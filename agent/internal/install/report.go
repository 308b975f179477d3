package install

import (
	"encoding/json"

	bolt "go.etcd.io/bbolt"

	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// advance moves the job forward to state (never back: a resumed job passes
// the steps it had done without reporting them again), persists it, then
// reports it.
func (in *Installer) advance(rec *jobRecord, state string) error {
	if rank(state) <= rank(rec.State) {
		return nil
	}
	rec.State, rec.UpdatedAt = state, in.cfg.Now().UTC()
	if err := in.update(func(tx *bolt.Tx) error { return putJob(tx, rec) }); err != nil {
		return err
	}
	if err := in.checkpoint("persisted:" + state); err != nil {
		return err
	}
	return in.reportState(rec)
}

// reportState queues the report of the job's state, then marks it
// reported. A crash in between reports it again after the restart (at
// least once; the msg_id differs, the state is the same).
func (in *Installer) reportState(rec *jobRecord) error {
	if err := in.enqueue(rec); err != nil {
		in.log.Warn("job report not queued; will retry", "job", rec.Job.ID, "state", rec.State, "err", err)
		in.retry = true
		return nil
	}
	if err := in.checkpoint("enqueued:" + rec.State); err != nil {
		return err
	}
	rec.Reported = rec.State
	return in.update(func(tx *bolt.Tx) error { return putJob(tx, rec) })
}

// flushReports reports every job whose current state is not reported yet.
func (in *Installer) flushReports() error {
	var todo []*jobRecord
	err := in.view(func(tx *bolt.Tx) error {
		jobs, err := listJobs(tx)
		for _, r := range jobs {
			if r.Reported != r.State {
				todo = append(todo, r)
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	for _, r := range todo {
		if err := in.reportState(r); err != nil {
			return err
		}
	}
	return nil
}

// enqueue puts the job's report into the outbox. Installed names the slot
// whose model serves: the active one once committed, the previous one
// while the active slot is on trial.
func (in *Installer) enqueue(rec *jobRecord) error {
	var installed *Slot
	if err := in.view(func(tx *bolt.Tx) error {
		p, err := getSlots(tx)
		installed = p.Active
		if installed != nil && !installed.Committed {
			installed = p.Previous
		}
		return err
	}); err != nil {
		return err
	}
	r := wire.JobReport{
		Schema: wire.JobReportSchema, JobID: rec.Job.ID, RolloutID: rec.Job.RolloutID, Attempt: rec.Job.Attempt,
		State: rec.State, Reason: rec.Reason, Detail: rec.Detail, At: in.cfg.Now().UTC(),
	}
	if rec.State == wire.JobDownloading {
		r.Downloaded = rec.Downloaded
	}
	if installed != nil {
		r.InstalledName, r.InstalledVersion = installed.Name, installed.Version
	}
	topic := mqttacl.JobTopic(in.tenant, in.device, rec.Job.ID)
	_, err := in.cfg.Outbox.EnqueueFunc(topic, 1, false, func(msgID string) ([]byte, error) {
		r.MsgID = msgID
		return json.Marshal(r)
	})
	return err
}

// progress persists and reports the download offset, at most once per
// ProgressInterval (and always when final).
func (in *Installer) progress(rec *jobRecord, downloaded int64, final bool) error {
	now := in.cfg.Now()
	if !final && now.Sub(in.lastProgress) < in.cfg.ProgressInterval {
		return nil
	}
	in.lastProgress = now
	rec.Downloaded = downloaded
	if err := in.update(func(tx *bolt.Tx) error { return putJob(tx, rec) }); err != nil {
		return err
	}
	if err := in.enqueue(rec); err != nil {
		in.log.Warn("download progress not reported", "job", rec.Job.ID, "err", err)
	}
	return nil
}
