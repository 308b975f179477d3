// Package policy keeps the agent's fleet policy bundle (docs/policy.md) and
// answers the install pipeline's policy questions with it.
//
// A Manager fetches the signed OPA bundle of the device's fleet from the
// control plane over the device's mTLS channel — when it starts, when the
// control plane announces a revision on cmd/policy, on every MQTT
// connection and every RefreshInterval — and installs it only if:
//
//   - it verifies under the pinned key: the tenant's policy verification key
//     fetched once, on first use, over the same mTLS channel and kept in the
//     state file; a later change of key is refused (KEY_CHANGED), never
//     followed;
//   - its signed manifest names this device's tenant and fleet;
//   - its revision is strictly newer than the active one (anti-rollback:
//     an older or equal revision is refused with OLDER_REVISION, also after
//     a restart, because the active revision is persisted);
//   - it compiles on the device.
//
// The active bundle (bytes, revision, digest) is persisted in the agent's
// bbolt state (namespace "policy") before it takes effect, and verified
// again under the pin when the agent starts. Each install and refusal is
// logged and, with an outbox, reported as a wire.PolicyEvent on the
// device's telemetry topic.
//
// Manager implements install.Policy: data.tensorguard.install is evaluated
// with the evaluator prepared once per bundle. Without an active bundle it
// allows only when the control plane has said the fleet has no policy;
// before that (nothing fetched yet) it denies: fail closed.
package policy
