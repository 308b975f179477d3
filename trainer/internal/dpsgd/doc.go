// Package dpsgd is TG-Tinker's DP-SGD compute engine: per-example
// gradients, clipping, Gaussian noise and AdamW over GoMLX's pure-Go
// backend (simplego), for any Model built from the Builder's linear
// primitives.
//
// # What a step does
//
// With Config.Enabled, one optimizer step is, exactly:
//
//  1. The batch is a Poisson sample: every example of the N-example
//     dataset is included independently with probability q
//     (Config.SampleRate), drawn in Go per step (SampleBatch), so the
//     batch size varies — the sampling the RDP/PRV accountants in
//     internal/dpaccount assume. Batches built any other way (a client
//     sending fixed-size batches) are outside the accountant's guarantee.
//  2. Every example's gradient g_b over all parameters jointly is
//     clipped: g_b·min(1, C/(‖g_b‖₂+1e-6)) with C = Config.MaxGradNorm.
//  3. The clipped gradients are summed and N(0, σ²C²) is added to every
//     coordinate (σ = Config.NoiseMultiplier).
//  4. The noised sum is divided by the expected batch size q·N, not by
//     the realised one: the realised size is itself data-dependent, and
//     dividing by it would need its own privacy analysis. With q·N fixed
//     the step is the Gaussian mechanism on a sum of sensitivity C, which
//     is what the accountants compose. (Opacus does the same for Poisson
//     sampling.)
//  5. AdamW (decoupled weight decay) applies the result.
//
// An empty sample still takes a step (pure noise): skipping it would
// reveal that the sample was empty. A logical batch may arrive in several
// ForwardBackward calls (and is split into MaxPhysicalBatch pieces); the
// noise is added once, in OptimStep. With Enabled false the step uses the
// plain mean gradient of the batch, same model, same optimizer: the
// baseline of the step-time benchmark.
//
// # Randomness
//
// Noise and sampling come from a ChaCha8 generator (math/rand/v2) that is
// reseeded with 32 bytes from crypto/rand for every use, so no state an
// attacker could learn carries from step to step. Only when the process
// environment has TG_DETERMINISTIC=true are the seeds derived from
// Config.Seed (SHA-256 of seed, stream, counter), and New logs a warning
// that the run then has no privacy guarantee. Parameter initialisation
// is always derived from Config.Seed; it is not privacy-relevant.
// The Gaussian is sampled in floating point (NormFloat64), like Opacus
// and TF Privacy; the known floating-point attacks on such samplers
// (Mironov 2012 for Laplace; Jin et al. 2022 for Gaussians) are not
// mitigated here.
//
// # Per-example gradients
//
// GoMLX's generic gradient of a matrix product materialises a broadcast
// product and reduces it (about 10× slower than a matrix product in the
// pure-Go backend), and the backend has no gradient for its native
// convolution, Pad, Slice or max-pooling. So the engine does not let
// autodiff cross a matrix product at all. Models create weights only
// through Builder.Linear (and Dense and Conv2D on top of it), which
// computes z = StopGradient(a)·W and records (a, z). The engine then
// walks the linear operations from the last to the first: autodiff over
// the non-linear segment gives δ = ∂L/∂z, the gradient flowing into a is
// δ·Wᵀ, a matrix product, handed back to autodiff as the constant
// coefficient of Σ a·(δ·Wᵀ) for the segment before. From (a, δ):
//
//   - Dense layers (no token axes): the per-example squared norm is the
//     "ghost norm" ‖a_b‖²·‖δ_b‖² (+‖δ_b‖² for the bias; Goodfellow 2015),
//     and the clipped sum is one matrix product aᵀ·(c⊙δ). Nothing per
//     example is materialised.
//   - Convolutions (and, later, sequence models) have token axes: the
//     per-example gradients G_b = Σ_t a_bt ⊗ δ_bt come from one batched
//     matrix product, then ‖G_b‖² and Σ_b c_b·G_b.
//
// Convolutions are matrix products over image patches gathered with a
// constant index (images are held "spatial-major", [H, W, B, C], so a
// patch is a Gather of whole [B, C] slabs whose gradient is a ScatterSum);
// max-pooling is the maximum of shifted gathers.
//
// The plain (non-DP) step computes the same δ and forms aᵀ·δ. So DP-SGD
// costs the plain step plus the per-example norms, a few percent for the
// MNIST CNN. The alternative, Opacus' "expanded weights" (every weight
// broadcast to one copy per example, autodiff with respect to the copies),
// is available as PerExampleExpanded for comparison. Measured on the MNIST
// CNN of package mnist (26,010 parameters), batch 256, median of 20
// interleaved steps in one process, 2 cores shared with other jobs
// (hack/bench-dp.sh):
//
//	                         wall ms/step      CPU ms/step
//	non-DP (mean gradient)   172.2             236.4
//	DP-SGD, this method      172.5  (1.00×)    263.8  (1.12×)
//	DP-SGD, expanded         1418.1 (8.2×)     1377.4 (5.8×)
//
// (CPU time is the steadier figure on a shared machine.) On a dense
// 784→256→10 network the expanded method is ~60× slower than this one,
// which costs 1.05× the non-DP step there.
//
// Both methods are tested against GoMLX's own autodiff run on one example
// at a time.
//
// # Using it
//
// New(cfg, model) creates an Engine on the process-wide backend
// (SharedBackend: $GOMLX_BACKEND, default "go:parallelism=-1"; only the
// pure-Go backend is accepted). SampleBatch draws a Poisson batch, Step
// (= ForwardBackward + OptimStep) trains on it, Evaluate measures loss and
// accuracy, Params/SetParams and Checkpoint/Restore move the state in and
// out as named float32 tensors. An Engine is not safe for concurrent use.
// Batch sizes are padded with zero-weight rows to multiples of
// Config.BucketMultiple, so the variable Poisson sizes reuse a handful of
// compiled graphs.
//
// The engine counts steps; the privacy spent is internal/dpaccount's
// Epsilon of (q, σ, Steps()).
//
// Not supported yet: a weight used by two linear operations (tied
// embeddings), and parameters outside linear operations (LayerNorm gains,
// embedding tables): a byte-level LM fine-tuned with LoRA only trains
// linear adapters and fits as is; full fine-tuning would need an
// expanded-weights path for those parameters.
package dpsgd
