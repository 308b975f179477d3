package rollout

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// ReportFilter matches every device's job report topics,
// tg/v1/<tenant>/devices/<device>/jobs/<job id>.
const ReportFilter = mqttacl.Prefix + "/+/devices/+/jobs/+"

// Limits on what a report may carry.
const (
	maxReportBytes  = 64 << 10
	maxMsgIDLen     = 128
	maxDetailLen    = 512
	maxReportTries  = 3
	reportSaveRetry = 10 * time.Millisecond
)

var reasonRe = regexp.MustCompile(`^[A-Z][A-Z0-9_]{0,63}$`)

type reportMsg struct {
	tenant, device, job string
	payload             []byte
}

// parseReportTopic returns tenant, device and job of
// tg/v1/<tenant>/devices/<device>/jobs/<job>.
func parseReportTopic(topic string) (reportMsg, bool) {
	parts := strings.Split(topic, "/")
	if len(parts) != 7 || parts[0]+"/"+parts[1] != mqttacl.Prefix || parts[3] != "devices" || parts[5] != "jobs" {
		return reportMsg{}, false
	}
	m := reportMsg{tenant: parts[2], device: parts[4], job: parts[6]}
	ok := mqttacl.ValidTenant(m.tenant) && mqttacl.ValidID(m.device) && store.ValidID(store.PrefixJob, m.job)
	return m, ok
}

// HandleMessage is the subscription handler for ReportFilter. It never
// blocks: reports go to workers sharded by device, so one device's reports
// are applied in the order they arrived. Tenant, device and job come from
// the topic (the broker lets only device D publish under D's prefix).
func (e *Engine) HandleMessage(topic string, payload []byte) {
	m, ok := parseReportTopic(topic)
	if !ok || len(payload) == 0 || len(payload) > maxReportBytes {
		return
	}
	m.payload = payload
	h := fnv.New32a()
	_, _ = h.Write([]byte(m.tenant + "/" + m.device))
	select {
	case e.queues[h.Sum32()%uint32(len(e.queues))] <- m:
	default:
		// The broker has acknowledged it to the device, whose outbox will
		// not send it again: the leader asks the open jobs' devices again.
		e.Log.Warn("job report dropped: queue full", "tenant", m.tenant, "device", m.device, "job", m.job)
		e.resync.Store(true)
	}
}

func (e *Engine) work(ctx context.Context, q <-chan reportMsg) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-q:
			if err := e.applyReport(ctx, m); err != nil && ctx.Err() == nil {
				// The store failed (bad reports are dropped without an
				// error); the report is gone, so the leader asks again.
				e.Log.Warn("job report not applied", "tenant", m.tenant, "device", m.device, "job", m.job, "error", err)
				e.resync.Store(true)
			}
		}
	}
}

// decodeReport parses and checks a report published on job's topic.
func decodeReport(payload []byte, job string) (wire.JobReport, error) {
	var r wire.JobReport
	if err := json.Unmarshal(payload, &r); err != nil {
		return r, fmt.Errorf("not JSON: %w", err)
	}
	switch {
	case r.Schema != wire.JobReportSchema:
		return r, fmt.Errorf("schema %q", r.Schema)
	case r.JobID != job:
		return r, fmt.Errorf("names job %q on the topic of %s", r.JobID, job)
	case r.MsgID == "" || len(r.MsgID) > maxMsgIDLen:
		return r, errors.New("no msg_id, or longer than 128 bytes")
	case r.Attempt < 1:
		return r, fmt.Errorf("attempt %d", r.Attempt)
	case stateRank(r.State) == 0:
		return r, fmt.Errorf("unknown state %q", r.State)
	case r.Reason != "" && !reasonRe.MatchString(r.Reason):
		return r, fmt.Errorf("reason %q is not a code", r.Reason)
	}
	r.Detail = truncate(r.Detail, maxDetailLen)
	r.InstalledName, r.InstalledVersion = truncate(r.InstalledName, 128), truncate(r.InstalledVersion, 128)
	return r, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return strings.ToValidUTF8(s, "")
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// stateRank orders the reported states along the pipeline (0: unknown).
func stateRank(s string) int {
	switch s {
	case wire.JobReceived:
		return 1
	case wire.JobDownloading:
		return 2
	case wire.JobVerifying:
		return 3
	case wire.JobPolicy:
		return 4
	case wire.JobKeyGrant:
		return 5
	case wire.JobInstalling:
		return 6
	case wire.JobSelfTest:
		return 7
	case wire.JobCommitted, wire.JobFailed, wire.JobRefused, wire.JobRolledBack:
		return 10
	}
	return 0
}

// errRetry: the job changed between read and write; apply again.
var errRetry = errors.New("job changed concurrently")

// applyReport applies one report in one transaction: the job must be the
// device's and released, the report fresh (not a duplicate of job,
// attempt and msg id), and it moves the job along — a job's outcome is
// recorded once and never changes afterwards, so duplicated, late and
// reordered reports count nothing twice.
func (e *Engine) applyReport(ctx context.Context, m reportMsg) error {
	rep, err := decodeReport(m.payload, m.job)
	if err != nil {
		e.Log.Debug("malformed job report ignored", "tenant", m.tenant, "device", m.device, "job", m.job, "error", err)
		return nil
	}
	for try := 1; ; try++ {
		ev, err := e.applyReportOnce(ctx, m, rep)
		if errors.Is(err, errRetry) && try < maxReportTries {
			time.Sleep(reportSaveRetry)
			continue
		}
		if err != nil {
			return err
		}
		if ev != nil {
			e.publishEvents([]Event{*ev})
			e.statusChanged(m.tenant, ev.RolloutID)
			e.Kick()
		}
		return nil
	}
}

func (e *Engine) applyReportOnce(ctx context.Context, m reportMsg, rep wire.JobReport) (*Event, error) {
	var ev *Event
	err := e.Store.WithTx(ctx, func(tx *store.Tx) error {
		ev = nil
		j, err := tx.GetJob(ctx, m.tenant, m.job)
		if errors.Is(err, store.ErrNotFound) {
			e.Log.Debug("report of an unknown job ignored", "tenant", m.tenant, "device", m.device, "job", m.job)
			return nil
		}
		if err != nil {
			return err
		}
		switch {
		case j.DeviceID != m.device:
			e.Log.Warn("job report ignored: the job is another device's", "tenant", m.tenant, "device", m.device,
				"job", m.job, "owner", j.DeviceID)
			return nil
		case rep.RolloutID != j.RolloutID:
			e.Log.Debug("job report ignored: wrong rollout", "tenant", m.tenant, "device", m.device, "job", m.job, "rollout", rep.RolloutID)
			return nil
		case rep.Attempt > j.Attempt:
			e.Log.Debug("job report ignored: attempt not released", "tenant", m.tenant, "device", m.device, "job", m.job,
				"attempt", rep.Attempt, "released", j.Attempt)
			return nil
		}
		fresh, err := tx.RecordJobReport(ctx, m.tenant, store.JobReportRecord{JobID: j.JobID, Attempt: rep.Attempt, MsgID: rep.MsgID,
			State: rep.State, Reason: rep.Reason, SentAt: rep.At})
		if err != nil {
			return err
		}
		if !fresh {
			e.Log.Debug("duplicate job report ignored", "tenant", m.tenant, "device", m.device, "job", m.job, "msg_id", rep.MsgID)
			return nil
		}
		next, ok := applyTo(j, rep, e.Now().UTC())
		if !ok {
			return nil
		}
		saved, err := tx.SaveJob(ctx, next, j.State, j.Attempt)
		if errors.Is(err, store.ErrConflict) {
			return errRetry // rolls back the report record too
		}
		if err != nil {
			return err
		}
		if saved.State == j.State {
			return nil
		}
		r, err := tx.GetRollout(ctx, m.tenant, j.RolloutID)
		if err != nil {
			return err
		}
		ev = &Event{Tenant: m.tenant, RolloutID: r.ID, Type: EventJob, State: string(r.State), Wave: r.CurrentWave,
			Device: saved.DeviceID, JobID: saved.JobID, Kind: string(saved.Kind), JobState: string(saved.State),
			Attempt: saved.Attempt, Reason: saved.Reason, Detail: saved.Detail, At: saved.UpdatedAt}
		return nil
	})
	return ev, err
}

// applyTo returns job j after report rep, and whether anything changed.
func applyTo(j store.RolloutDevice, rep wire.JobReport, now time.Time) (store.RolloutDevice, bool) {
	terminal := wire.JobTerminal(rep.State)
	switch {
	case j.State.Done():
		return j, false // the outcome is recorded once
	case rep.Attempt < j.Attempt && !terminal:
		return j, false // progress of an attempt given up on
	}
	next := j
	next.ReportAt = now
	if terminal || stateRank(rep.State) >= stateRank(j.ReportState) {
		next.ReportState = rep.State
	}
	if rep.InstalledName != "" || rep.InstalledVersion != "" {
		next.InstalledName, next.InstalledVersion = rep.InstalledName, rep.InstalledVersion
		// What was active before this job's package: from any report
		// that shows another package (before the switch, or after a
		// failed install rolled the device back).
		if j.Kind == store.JobKindInstall && j.PreviousName == "" &&
			(rep.InstalledName != j.PackageName || rep.InstalledVersion != j.PackageVersion) {
			next.PreviousName, next.PreviousVersion = rep.InstalledName, rep.InstalledVersion
		}
	}
	if !j.State.Released() {
		// Cancelled or skipped: the device is told so when it asks; its
		// reports are kept for the record but change no outcome.
		return next, true
	}
	if !terminal {
		next.State = store.JobInProgress
		return next, true
	}
	next.Reason, next.Detail = rep.Reason, rep.Detail
	switch {
	case rep.State == wire.JobCommitted, rep.State == wire.JobRolledBack && j.Kind == store.JobKindRollback:
		next.State, next.Reason, next.Detail = store.JobSucceeded, "", rep.Detail
	case rep.State == wire.JobRefused:
		next.State = store.JobRefused
	case rep.State == wire.JobRolledBack: // an install job the device undid
		next.State = store.JobFailed
		if next.Reason == "" {
			next.Reason = JobReasonRolledBack
		}
	default:
		next.State = store.JobFailed
	}
	return next, true
}
