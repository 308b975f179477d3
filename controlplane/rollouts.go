package controlplane

import (
	"context"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/broker"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/rollout"
)

// runRollouts runs the rollout engine (controlplane/internal/rollout):
// with the embedded broker it first subscribes in process to every
// device's job reports; with an external broker the presence connection
// subscribes (externalBroker.onJobReport). Every replica applies reports;
// the one holding the engine's lease drives the rollouts.
func (cp *ControlPlane) runRollouts(ctx context.Context) error {
	if cp.broker != nil {
		select {
		case <-cp.broker.Ready():
		case <-ctx.Done():
			return nil
		}
		unsub, err := cp.broker.Subscribe(rollout.ReportFilter, func(m broker.Message) {
			cp.rollouts.HandleMessage(m.Topic, m.Payload)
		})
		if err != nil {
			return err
		}
		defer unsub()
	}
	return cp.rollouts.Run(ctx)
}

// Rollouts returns the rollout engine (for tests and tools).
func (cp *ControlPlane) Rollouts() *rollout.Engine { return cp.rollouts }
