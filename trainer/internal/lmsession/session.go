// Package lmsession serves the byte-level transformer LM (trainer/internal/lm)
// as the base model "tg-lm-base" of TG-Tinker: a trainer.Session that
// fine-tunes LoRA adapters with the DP-SGD engine (trainer/internal/dpsgd),
// scores and samples with the merged weights, and exports them as ONNX.
//
// State across futures: the engine's checkpoint (adapters, AdamW moments,
// steps) and the examples forward_backward accumulated since the last
// optim_step. The engine does not checkpoint its gradient accumulator, so a
// restored session recomputes it from those examples: clipping is
// deterministic and the noise is drawn only at optim_step, so the step is
// the one the interrupted process would have taken.
package lmsession

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"sync"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/trainer"
	"github.com/tensorguard/tensorguardflow/trainer/client"
	"github.com/tensorguard/tensorguardflow/trainer/internal/dpsgd"
	"github.com/tensorguard/tensorguardflow/trainer/internal/lm"
)

// Name is the base model's name.
const Name = "tg-lm-base"

// Default LoRA and optimizer settings for a client that gives none.
const (
	DefaultRank = 8
	DefaultLR   = 5e-3
)

var (
	baseOnce sync.Once
	base     onnxmodel.LM
	baseHash string
	baseErr  error
)

func loadBase() (onnxmodel.LM, string, error) {
	baseOnce.Do(func() { base, baseHash, baseErr = lm.LoadBase() })
	return base, baseHash, baseErr
}

// Session is a trainer.Session over a LoRA fine-tune of tg-lm-base.
type Session struct {
	hash    string
	context int
	model   *lm.LoRA
	engine  *dpsgd.Engine
	dp      trainer.DPParams
	pending []trainer.Example // accumulated since the last OptimStep
	sent    float64           // examples sent to forward_backward since then
	merged  *onnxmodel.LM     // cache of the merged weights, cleared by OptimStep/Unmarshal
}

var _ trainer.Session = (*Session)(nil)

// New is a trainer.Factory.
func New(cfg client.TrainingClientConfig, dp trainer.DPParams) (trainer.Session, error) {
	b, hash, err := loadBase()
	if err != nil {
		return nil, err
	}
	return newSession(b, hash, cfg, dp)
}

// newSession fine-tunes base (tests use a small random one).
func newSession(b onnxmodel.LM, hash string, cfg client.TrainingClientConfig, dp trainer.DPParams) (*Session, error) {
	rank := cfg.LoRA.Rank
	if rank == 0 {
		rank = DefaultRank
	}
	model, err := lm.NewLoRA(b, lm.LoRAConfig{Rank: rank, Alpha: cfg.LoRA.Alpha})
	if err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	ec := dpsgd.DefaultConfig()
	ec.Enabled = dp.Enabled
	ec.NoiseMultiplier, ec.MaxGradNorm, ec.SampleRate = dp.NoiseMultiplier, dp.MaxGradNorm, dp.SampleRate
	ec.DatasetSize = 1 // set per step from the examples sent
	ec.LR = DefaultLR
	ec.Seed = cfg.Seed
	// Requests carry tens of examples, not thousands: pad the Poisson
	// samples to multiples of 8 rather than the engine's 32.
	ec.BucketMultiple = 8
	a := cfg.Adam
	if err := setAdam(&ec, a); err != nil {
		return nil, err
	}
	if !dp.Enabled {
		ec.SampleRate, ec.MaxGradNorm = 0, 1
	}
	engine, err := dpsgd.New(ec, model)
	if err != nil {
		return nil, err
	}
	return &Session{hash: hash, context: b.Config.Context, model: model, engine: engine, dp: dp}, nil
}

func setAdam(c *dpsgd.Config, a client.AdamParams) error {
	if a.LearningRate != 0 {
		c.LR = a.LearningRate
	}
	if a.Beta1 != 0 {
		c.Beta1 = a.Beta1
	}
	if a.Beta2 != 0 {
		c.Beta2 = a.Beta2
	}
	if a.Eps != 0 {
		c.Eps = a.Eps
	}
	if a.WeightDecay != 0 {
		c.WeightDecay = a.WeightDecay
	}
	return c.Validate()
}

func toLM(ex []trainer.Example) []lm.Example {
	out := make([]lm.Example, len(ex))
	for i, e := range ex {
		out[i] = lm.Example{Tokens: e.Input, Targets: e.Targets, Weights: e.Weights}
	}
	return out
}

// ForwardBackward implements trainer.Session.
func (s *Session) ForwardBackward(ctx context.Context, ex []trainer.Example, expected float64) (trainer.StepStats, error) {
	st, err := s.accumulate(ctx, ex)
	if err != nil {
		return st, err
	}
	s.pending = append(s.pending, ex...)
	s.sent += expected / max(s.dp.SampleRate, 1e-300)
	if !s.dp.Enabled {
		s.sent = float64(len(s.pending))
	}
	return st, nil
}

// maxPiece bounds the examples run through the engine at once (memory).
const maxPiece = 32

func (s *Session) accumulate(ctx context.Context, ex []trainer.Example) (trainer.StepStats, error) {
	var st trainer.StepStats
	var lossSum, clipSum float64
	for start := 0; start < len(ex); start += maxPiece {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		piece := ex[start:min(start+maxPiece, len(ex))]
		b, err := s.model.Batch(toLM(piece))
		if err != nil {
			return st, err
		}
		ps, err := s.engine.ForwardBackward(b)
		if err != nil {
			return st, err
		}
		lossSum += ps.Loss * float64(len(piece))
		clipSum += ps.ClipFraction * float64(len(piece))
	}
	st.Examples = len(ex)
	if len(ex) > 0 {
		st.Loss, st.ClipFraction = lossSum/float64(len(ex)), clipSum/float64(len(ex))
	}
	return st, nil
}

// runner returns a runner over the merged weights.
func (s *Session) runner() (*lm.Runner, onnxmodel.LM, error) {
	if s.merged == nil {
		m, err := s.model.Merge(s.engine.Params())
		if err != nil {
			return nil, onnxmodel.LM{}, err
		}
		s.merged = &m
	}
	r, err := lm.NewRunner(*s.merged)
	return r, *s.merged, err
}

// Forward implements trainer.Session: the weighted mean next-token loss of
// each example, averaged.
func (s *Session) Forward(ctx context.Context, ex []trainer.Example) (trainer.StepStats, error) {
	r, _, err := s.runner()
	if err != nil {
		return trainer.StepStats{}, err
	}
	lp, err := r.TargetLogprobs(toLM(ex))
	if err != nil {
		return trainer.StepStats{}, err
	}
	st := trainer.StepStats{Examples: len(ex)}
	for i, e := range ex {
		var num, den float64
		for t, w := range e.Weights {
			num -= float64(w) * float64(lp[i][t])
			den += float64(w)
		}
		if den > 0 {
			st.Loss += num / den
		}
	}
	if len(ex) > 0 {
		st.Loss /= float64(len(ex))
	}
	return st, ctx.Err()
}

// OptimStep implements trainer.Session.
func (s *Session) OptimStep(_ context.Context, a client.AdamParams) error {
	if err := s.engine.SetOptimizer(a.LearningRate, a.Beta1, a.Beta2, a.Eps, a.WeightDecay); err != nil {
		return err
	}
	if s.dp.Enabled {
		if err := s.engine.SetDatasetSize(max(1, int(math.Round(s.sent)))); err != nil {
			return err
		}
	}
	if err := s.engine.OptimStep(); err != nil {
		return err
	}
	s.pending, s.sent, s.merged = nil, 0, nil
	return nil
}

// Sample implements trainer.Session.
func (s *Session) Sample(ctx context.Context, prompt []int32, n int, p client.SamplingParams) ([]client.SampledSequence, error) {
	r, _, err := s.runner()
	if err != nil {
		return nil, err
	}
	pb := make([]byte, len(prompt))
	for i, t := range prompt {
		pb[i] = byte(t)
	}
	stops := make([][]byte, len(p.Stop))
	for i, st := range p.Stop {
		stops[i] = []byte(st)
	}
	maxTok := p.MaxTokens
	if maxTok == 0 {
		maxTok = 32
	}
	var seed uint64
	if p.Seed != nil {
		seed = *p.Seed
	} else {
		seed = randomSeed()
	}
	out := make([]client.SampledSequence, n)
	for i := range n {
		smp, err := r.Sample(ctx, pb, lm.SampleParams{MaxTokens: maxTok, Temperature: p.Temperature, TopK: p.TopK,
			TopP: p.TopP, Stop: stops, Seed: seed + uint64(i)})
		if err != nil {
			return nil, err
		}
		toks := make([]int, len(smp.Tokens))
		for j, b := range smp.Tokens {
			toks[j] = int(b)
		}
		out[i] = client.SampledSequence{Tokens: toks, Text: string(smp.Tokens), StopReason: smp.FinishReason}
	}
	return out, nil
}

// state is what MarshalState writes.
type state struct {
	Checkpoint dpsgd.Checkpoint  `json:"checkpoint"`
	Pending    []trainer.Example `json:"pending"`
	Sent       float64           `json:"sent"`
}

// MarshalState implements trainer.Session.
func (s *Session) MarshalState() ([]byte, error) {
	return json.Marshal(state{Checkpoint: s.engine.Checkpoint(), Pending: s.pending, Sent: s.sent})
}

// UnmarshalState implements trainer.Session: the engine is restored and
// the pending examples' gradients are computed again.
func (s *Session) UnmarshalState(b []byte) error {
	var st state
	if err := json.Unmarshal(b, &st); err != nil {
		return err
	}
	if err := s.engine.Restore(st.Checkpoint); err != nil {
		return err
	}
	s.merged = nil
	if _, err := s.accumulate(context.Background(), st.Pending); err != nil {
		return fmt.Errorf("recompute the pending gradients: %w", err)
	}
	s.pending, s.sent = st.Pending, st.Sent
	return nil
}

// Export implements trainer.Session: the adapters merged into the base
// weights, as the ONNX graph onnxmodel writes, with a self-test from the
// pure-Go reference forward pass.
func (s *Session) Export() (trainer.Exported, error) {
	_, m, err := s.runner()
	if err != nil {
		return trainer.Exported{}, err
	}
	enc, err := m.Encode()
	if err != nil {
		return trainer.Exported{}, err
	}
	return trainer.LMPackageFiles(enc, m.Forward, []int64{'t', 'h', 'e', ' ', 'e', 'd', 'g', 'e'})
}

// BaseSHA256 implements trainer.Session.
func (s *Session) BaseSHA256() string { return s.hash }

// Context implements trainer.Session.
func (s *Session) Context() int { return s.context }

// randomSeed seeds a sample that asked for no seed.
func randomSeed() uint64 {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read does not fail (Go 1.24+)
	return binary.BigEndian.Uint64(b[:])
}
