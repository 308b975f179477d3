package controlplane_test

import (
	"context"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// losesFinalReport installs and commits, but its committed report never
// reaches the control plane — as when the broker acknowledged it while no
// control plane was subscribed (an external broker restarted before the
// control plane resubscribed), or the control plane took it while its
// database was down.
func losesFinalReport(d *simDevice, j wire.Job) []string {
	d.mu.Lock()
	d.finished[j.ID] = wire.JobCommitted
	d.installed = [2]string{j.Package.Name, j.Package.Version}
	d.mu.Unlock()
	return []string{wire.JobReceived, wire.JobDownloading, wire.JobKeyGrant, wire.JobInstalling}
}

// TestRolloutResyncRecoversLostFinalReport: a device's final report is
// lost after its progress reports arrived (its job in_progress). Resync —
// what the control plane does when its broker connection comes back —
// notifies the job again, the device answers with its final state, and
// the rollout completes at the first attempt instead of waiting for the
// device timeout. (Before the fix only jobs with no report at all were
// notified again, so this job stayed in_progress for its hour.)
func TestRolloutResyncRecoversLostFinalReport(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newRolloutEnv(t)
	d := newSimDevice(t, e.h, e.fleet.ID, nil, "yolo@1.0.0", losesFinalReport)
	d.reanswer = true
	r, err := e.c.CreateRollout(ctx, client.RolloutCreate{Package: "yolo@2.0.0", Fleet: "edge", DeviceTimeout: "1h"})
	if err != nil {
		t.Fatal(err)
	}
	e.wait(t, r.ID, "the job in progress at installing", 20*time.Second, func(r client.Rollout) bool {
		j, _ := jobOf(r, d.dev.ID, "install")
		return j.State == "in_progress" && j.ReportState == wire.JobInstalling
	})
	if n := len(d.notifications()); n != 1 {
		t.Fatalf("%d notifications before the resync, want 1", n)
	}
	e.h.CP.Rollouts().Resync()
	final := e.waitState(t, r.ID, client.RolloutCompleted, 20*time.Second)
	j, _ := jobOf(final, d.dev.ID, "install")
	if j.State != "succeeded" || j.Attempt != 1 || j.ReportState != wire.JobCommitted || j.InstalledVersion != "2.0.0" {
		t.Errorf("job after the resync: %+v", j)
	}
	if n := len(d.notifications()); n < 2 {
		t.Errorf("%d notifications, want the resync's too", n)
	}
}
