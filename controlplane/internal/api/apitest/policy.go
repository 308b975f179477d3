package apitest

import (
	"context"
	"fmt"
	"sync"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/api"
)

// PolicyNotifier is an api.PolicyNotifier that records its calls instead
// of publishing on MQTT.
type PolicyNotifier struct {
	mu    sync.Mutex
	calls []string
}

var _ api.PolicyNotifier = (*PolicyNotifier)(nil)

// NotifyPolicy implements api.PolicyNotifier.
func (n *PolicyNotifier) NotifyPolicy(_ context.Context, tenant, fleetID string, revision int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, fmt.Sprintf("%s/%s@%d", tenant, fleetID, revision))
}

// Calls returns "tenant/fleet@revision" for every call so far.
func (n *PolicyNotifier) Calls() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.calls...)
}
