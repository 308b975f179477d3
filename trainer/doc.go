// Package trainer is TG-Tinker: private fine-tuning behind a Tinker-shaped
// API, mounted by the control plane (tg-controlplane serves it under /v1/
// on its listener, with its API keys, database and tenant keys).
//
// # API
//
// Routes (docs/trainer.md; /v1/openapi.json): POST /v1/training_clients
// (base model, LoRA, Adam, dp_config); POST …/{id}/forward_backward,
// forward, optim_step, sample, save_state, load_state and export, each
// answered 202 with a future; GET /v1/futures/{id}, …/result (?wait=S
// long-polls), POST …/cancel; GET …/{id}/privacy; GET /v1/artifacts/{id}
// (an exported package). The Go SDK is trainer/client.
//
// # Guarantees
//
//   - Tenants come from the control plane's API keys (Host.Authenticate),
//     and every row, future and artifact is looked up by tenant: another
//     tenant's ids are 404.
//   - Work is queued in the database before it is acknowledged (package
//     jobs): a restart or a killed worker loses no accepted future, and a
//     future whose worker died runs again from the state before it (state
//     and result are written in one transaction).
//   - Per-client order is strict: one future of a client runs at a time, in
//     submission order; a synchronous call is a future the SDK waits for,
//     so it never overtakes queued work. Cancel stops a queued future for
//     good and a running one at its next check, discarding its changes.
//     An Idempotency-Key makes a retried submission return the same future
//     (the SDK sends one on every submission and retries with it).
//   - Privacy: with dp_config.enabled, forward_backward draws a Poisson
//     sample (rate q, crypto/rand) of the examples sent, which is what the
//     accountants assume; the session clips each example's gradient to C,
//     and optim_step adds N(0, σ²C²) once and normalizes by the expected
//     batch size q·n. Every optim_step is recorded in the client's privacy
//     ledger; ε is computed by internal/dpaccount (RDP, PRV or moments;
//     the PRV upper bound) and a step that would exceed target_epsilon is
//     refused with DP_BUDGET_EXCEEDED, at submission (counting queued
//     steps) and again when it runs.
//   - Artifacts are sealed: requests (training data), results, session
//     states, checkpoints and exported packages are stored encrypted with
//     the tenant's data key (AES-256-GCM under a DEK wrapped by the KEK,
//     rotation keeping old envelopes readable), with the kind, tenant and
//     id as associated data. The API never returns a digest of plaintext
//     data: an export's evidence carries a digest of the examples sent,
//     salted with a random secret kept in the client's sealed state.
//   - Audit: every operation is appended to the tenant's audit hash chain
//     when it completes (trainer.<op>, with the future, status and its
//     figures), as are client creation and cancels.
//   - Export: the session merges what it trained into the base model and
//     writes it as ONNX with the package convention files (tg-model.json,
//     a self-test computed by the trainer's forward pass); it is packed as
//     TGSP in memory (tgsp.PackFS) with dp_cert.json (ε, δ, accountant, σ,
//     C, q, steps) and evidence.json (base model and its hash, the salted
//     data digest, the audit chain head), signed by the tenant's trainer
//     key (pinned as publisher "tg-tinker") and packed to the control
//     plane's package key, so it can be pushed and rolled out at once.
//
// Base models are Factories (package trainer/models lists the served
// ones); a Session holds one client's model, optimizer and gradient
// accumulator and can marshal all of it.
package trainer
