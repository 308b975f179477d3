// Package lm is TG-Tinker's small byte-level causal transformer language
// model in GoMLX (pure-Go backend): the shipped base model "tg-lm-base",
// LoRA fine-tuning under DP-SGD through package dpsgd, sampling, merging
// the adapters back, and the checkpoint format.
//
// # The model
//
// The architecture and every weight's name, shape and layout are
// onnxmodel.LM's (cgo/onnxruntime/onnxmodel, see its package doc): 256 byte
// tokens, learned positions, pre-LN blocks (LayerNorm ε 1e-5 with the
// population variance, causal multi-head attention, an exact-GELU MLP),
// a final LayerNorm and an output head tied to the token embedding. Weights
// travel as an onnxmodel.LM everywhere in this package, so what is trained
// here is what onnxmodel exports and a device runs; onnxmodel.LM.Forward,
// a float64 loop-by-loop reference, is what the tests compare against.
//
// GoMLX's pure-Go backend has no gradient for Rsqrt or Slice, and its
// generic DotGeneral gradient materialises a broadcast product (DESIGN.md
// §3). So: LayerNorm divides by Sqrt; positions are a Gather; GELU uses
// GoMLX's Erf (exact, with a gradient); and every matrix product the
// network takes gradients through — projections, the attention products,
// the tied head — is dot (dot.go), whose gradients are themselves matrix
// products, reached through custom-gradient identities. Measured gradient
// agreement with GoMLX's own autodiff: 1e-5 relative (tests).
//
// # LoRA under DP-SGD
//
// LoRA (NewLoRA) is a dpsgd.Model. Its trainable parameters are the
// adapters only — for each block and each target projection W [in, out]
// (default attn.wq and attn.wv; any of wq, wk, wv, wo, w1, w2), A [in, r]
// drawn from U(±1/√in) and B [r, out] starting at zero, applied as
// x·W + (α/r)·(x·A)·B — so the adapters are exactly what the engine clips,
// noises and updates. The base weights are graph constants: they never
// change, and no gradient is formed for them. A and B go through the
// engine's Builder.Linear over [B, T, ·] inputs (the token axis T is a
// "token axis" to the engine), so the engine computes their per-example
// gradients as batched matrix products; the constants' products use dot.
// No change to package dpsgd was needed.
//
// Cost: the engine finds each linear operation's output gradient with its
// own graph.Gradient call, and here the frozen projections are not linear
// operations of the engine, so each adapter's B call re-runs the backward
// pass of the network above it. A DP step of the default adapters on the
// base model, 32 examples of 64 bytes, takes about 3.0 s on 2 shared cores,
// the same as the non-DP step of the same model (ratio 1.00;
// BenchmarkLoRAStep), and about twice a full-parameter pretraining step
// of the same batch. A single backward pass would need the engine to take
// all the gradients in one call (its linear products would need a
// matrix-product gradient like dot's instead of StopGradient).
//
// An example is tokens, targets and per-position weights (Example):
// position i reads tokens[0..i] and is scored on targets[i] with weight
// w_i. TinkerExample maps Tinker's cross_entropy Datum directly;
// HFExample maps input_ids/attention_mask/labels with the causal shift and
// -100 ignored; TextExample is next-byte prediction. Examples are padded
// with weight 0 to LoRAConfig.SeqLen (≤ the context; shorter is cheaper).
// The per-example loss is the weighted mean Σ w_i·ℓ_i / Σ w_i (ReduceMean,
// the default: a long example's gradient is not larger than a short one's
// before clipping) or the weighted sum (ReduceSum, Tinker's definition).
// Forward's Correct is the weighted fraction of positions whose argmax is
// the target, so Engine.Evaluate's accuracy is the mean token accuracy.
//
// LoRA.Merge folds trained adapters (Engine.Params) into a copy of the base
// weights, W + (α/r)·A·B, giving a plain onnxmodel.LM to export (LM.Model)
// or sample from.
//
// # Sampling
//
// Runner holds one LM's weights as graph inputs and compiles one graph per
// padded sequence length (8, 16, … up to the context), reused for every
// call and every model of the same shape. Runner.Sample generates bytes
// after a prompt with temperature (0 = greedy argmax), top-k, top-p, stop
// sequences and a seed (the same inputs give the same bytes), running the
// whole window — the last Context bytes — for every new byte (no KV
// cache). Logprobs are the model's at temperature 1. The base model samples
// about 75 bytes/s on 2 shared cores (BenchmarkSampleBase);
// Runner.TargetLogprobs scores given targets (Tinker's forward).
//
// # Checkpoints and the base model
//
// EncodeCheckpoint/DecodeCheckpoint are a small, versioned, strict binary
// format of the LM's named float32 tensors (see checkpoint.go for the
// layout): one encoding per model, and decoding refuses anything else
// (wrong magic, version, config, tensor names or shapes, sizes, trailing
// bytes, a bad SHA-256 trailer, non-finite values). The SHA-256 of the file
// is the base model hash (CheckpointHash).
//
// The base model (BaseConfig: context 64, width 96, 3 blocks of 4 heads,
// MLP 384; 366,432 parameters) is embedded from base/tg-lm-base.ckpt;
// LoadBase decodes it, BaseModelSHA256 pins its hash, and base/README.md
// says how it was trained (Pretrainer, driven by cmd/pretrain-lm and
// hack/pretrain-lm/run.sh: WordNet 3.1 glosses, AdamW, no DP — the base sees
// only public text): 2.89 bits/byte on held-out glosses against 4.51 for a
// unigram byte model, after 27 minutes on 2 shared cores. Its GoMLX logits
// agree with onnxmodel.LM.Forward to 1.1e-5 (logits up to 12).
//
// # What the trainer calls
//
//	base, hash, _ := lm.LoadBase()                     // "tg-lm-base" and its hash
//	model, _ := lm.NewLoRA(base, lm.LoRAConfig{Rank: 8})
//	eng, _ := dpsgd.New(dpCfg, model)                  // DP-SGD over the adapters
//	ex, _ := lm.TinkerExample(tokens, targets, weights) // or HFExample
//	batch, _ := model.Batch([]lm.Example{ex})
//	eng.ForwardBackward(batch); eng.OptimStep()
//	merged, _ := model.Merge(eng.Params())             // onnxmodel.LM: export or sample
//	run, _ := lm.NewRunner(merged)
//	s, _ := run.Sample(ctx, prompt, lm.SampleParams{MaxTokens: 64, Temperature: 0.8, Seed: 1})
//
// Engine.Checkpoint/Restore carry the adapters and optimizer state between
// save_state and load_state; the base is named by its hash.
package lm
