// Package bigram is the smallest causal language model there is, served as
// the base model "tg-bigram": a table of next-byte logits per byte,
// W[prev][next], starting from zeros. Its gradients are exact and its
// DP-SGD is real (per-example clipping of the joint gradient, Gaussian
// noise σC on every coordinate at the step, normalized by the expected
// batch size); it exports as a one-Gather ONNX graph that every agent
// runs. It trains in milliseconds, which makes it the quick way to see the
// whole path (train, export, roll out, infer) and the fake-free double of
// the queue's tests; tg-lm-base is the model worth fine-tuning.
package bigram

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/trainer"
	"github.com/tensorguard/tensorguardflow/trainer/client"
)

// Name is the base model's name.
const Name = "tg-bigram"

// V is the vocabulary (bytes).
const V = 256

// Bigram is a trainer.Session over the bigram model.
type Bigram struct {
	dp  trainer.DPParams
	rng *rand.Rand
	st  bigramState
	// Slow, when set, is called in every ForwardBackward (tests: hold a
	// future running).
	Slow func(ctx context.Context) error
}

type bigramState struct {
	W, M, Vv []float32
	Acc      []float64
	Expected float64
	Count    int
	Step     int
}

var _ trainer.Session = (*Bigram)(nil)

// New is a trainer.Factory.
func New(cfg client.TrainingClientConfig, dp trainer.DPParams) (trainer.Session, error) {
	return &Bigram{dp: dp, rng: rand.New(rand.NewPCG(cfg.Seed, 1)), st: bigramState{
		W: make([]float32, V*V), M: make([]float32, V*V), Vv: make([]float32, V*V), Acc: make([]float64, V*V)}}, nil
}

func (b *Bigram) logProbs(prev int32) []float64 {
	row := b.st.W[int(prev)*V : int(prev+1)*V]
	mx := math.Inf(-1)
	for _, v := range row {
		mx = math.Max(mx, float64(v))
	}
	out := make([]float64, V)
	sum := 0.0
	for i, v := range row {
		out[i] = math.Exp(float64(v) - mx)
		sum += out[i]
	}
	for i := range out {
		out[i] = math.Log(out[i] / sum)
	}
	return out
}

// loss is an example's weighted mean next-token cross-entropy, and its
// gradient (sparse: row → 256 values) when grad is set.
func (b *Bigram) loss(e trainer.Example, grad map[int32][]float64) float64 {
	total, wsum := 0.0, 0.0
	for t := range e.Input {
		wsum += float64(e.Weights[t])
	}
	if wsum == 0 {
		return 0
	}
	for t, prev := range e.Input {
		w := float64(e.Weights[t]) / wsum
		if w == 0 {
			continue
		}
		lp := b.logProbs(prev)
		total -= w * lp[e.Targets[t]]
		if grad != nil {
			g := grad[prev]
			if g == nil {
				g = make([]float64, V)
				grad[prev] = g
			}
			for i := range V {
				g[i] += w * math.Exp(lp[i])
			}
			g[e.Targets[t]] -= w
		}
	}
	return total
}

// ForwardBackward implements trainer.Session.
func (b *Bigram) ForwardBackward(ctx context.Context, ex []trainer.Example, expected float64) (trainer.StepStats, error) {
	if b.Slow != nil {
		if err := b.Slow(ctx); err != nil {
			return trainer.StepStats{}, err
		}
	}
	st := trainer.StepStats{Examples: len(ex)}
	clipped := 0
	for _, e := range ex {
		g := map[int32][]float64{}
		st.Loss += b.loss(e, g)
		scale := 1.0
		if b.dp.Enabled {
			n := 0.0
			for _, row := range g {
				for _, v := range row {
					n += v * v
				}
			}
			if n = math.Sqrt(n); n > b.dp.MaxGradNorm {
				scale = b.dp.MaxGradNorm / n
				clipped++
			}
		}
		for prev, row := range g {
			for i, v := range row {
				b.st.Acc[int(prev)*V+i] += scale * v
			}
		}
	}
	if len(ex) > 0 {
		st.Loss /= float64(len(ex))
		st.ClipFraction = float64(clipped) / float64(len(ex))
	}
	b.st.Count += len(ex)
	b.st.Expected += expected
	return st, ctx.Err()
}

// Forward implements trainer.Session.
func (b *Bigram) Forward(_ context.Context, ex []trainer.Example) (trainer.StepStats, error) {
	st := trainer.StepStats{Examples: len(ex)}
	for _, e := range ex {
		st.Loss += b.loss(e, nil)
	}
	if len(ex) > 0 {
		st.Loss /= float64(len(ex))
	}
	return st, nil
}

// OptimStep implements trainer.Session: AdamW on the (noised) mean.
func (b *Bigram) OptimStep(_ context.Context, p client.AdamParams) error {
	lr, b1, b2, eps := or(p.LearningRate, 0.1), or(p.Beta1, 0.9), or(p.Beta2, 0.999), or(p.Eps, 1e-8)
	div := float64(b.st.Count)
	if b.dp.Enabled {
		div = b.st.Expected
		for i := range b.st.Acc {
			b.st.Acc[i] += b.rng.NormFloat64() * b.dp.NoiseMultiplier * b.dp.MaxGradNorm
		}
	}
	if div <= 0 {
		div = 1
	}
	b.st.Step++
	c1, c2 := 1-math.Pow(b1, float64(b.st.Step)), 1-math.Pow(b2, float64(b.st.Step))
	for i := range b.st.W {
		g := b.st.Acc[i] / div
		m := b1*float64(b.st.M[i]) + (1-b1)*g
		v := b2*float64(b.st.Vv[i]) + (1-b2)*g*g
		b.st.M[i], b.st.Vv[i] = float32(m), float32(v)
		w := float64(b.st.W[i]) * (1 - lr*p.WeightDecay)
		b.st.W[i] = float32(w - lr*(m/c1)/(math.Sqrt(v/c2)+eps))
		b.st.Acc[i] = 0
	}
	b.st.Count, b.st.Expected = 0, 0
	return nil
}

func or(v, d float64) float64 {
	if v == 0 {
		return d
	}
	return v
}

// Sample implements trainer.Session.
func (b *Bigram) Sample(_ context.Context, prompt []int32, n int, p client.SamplingParams) ([]client.SampledSequence, error) {
	if len(prompt) == 0 {
		return nil, errors.New("empty prompt")
	}
	rng := b.rng
	if p.Seed != nil {
		rng = rand.New(rand.NewPCG(*p.Seed, 2))
	}
	maxTok := p.MaxTokens
	if maxTok == 0 {
		maxTok = 16
	}
	out := make([]client.SampledSequence, n)
	for s := range n {
		prev := prompt[len(prompt)-1]
		var toks []int
		reason := "length"
		for range maxTok {
			lp := b.logProbs(prev)
			next := 0
			if p.Temperature == 0 {
				for i := range lp {
					if lp[i] > lp[next] {
						next = i
					}
				}
			} else {
				r, acc := rng.Float64(), 0.0
				probs := make([]float64, V)
				sum := 0.0
				for i := range lp {
					probs[i] = math.Exp(lp[i] / p.Temperature)
					sum += probs[i]
				}
				for i := range probs {
					acc += probs[i] / sum
					if r <= acc {
						next = i
						break
					}
				}
			}
			toks = append(toks, next)
			prev = int32(next)
			if stopped(toks, p.Stop) {
				reason = "stop"
				break
			}
		}
		text := make([]byte, len(toks))
		for i, t := range toks {
			text[i] = byte(t)
		}
		out[s] = client.SampledSequence{Tokens: toks, Text: string(text), StopReason: reason}
	}
	return out, nil
}

func stopped(toks []int, stops []string) bool {
	for _, s := range stops {
		if s == "" || len(s) > len(toks) {
			continue
		}
		tail := toks[len(toks)-len(s):]
		match := true
		for i := range s {
			match = match && tail[i] == int(s[i])
		}
		if match {
			return true
		}
	}
	return false
}

// MarshalState implements trainer.Session.
func (b *Bigram) MarshalState() ([]byte, error) { return json.Marshal(b.st) }

// UnmarshalState implements trainer.Session.
func (b *Bigram) UnmarshalState(raw []byte) error {
	var st bigramState
	if err := json.Unmarshal(raw, &st); err != nil {
		return err
	}
	if len(st.W) != V*V || len(st.Acc) != V*V {
		return errors.New("bigram state of the wrong size")
	}
	b.st = st
	return nil
}

// Weights returns W (tests).
func (b *Bigram) Weights() []float32 { return b.st.W }

// Forward is the reference logits of the current weights.
func (b *Bigram) forward(tokens [][]int64) ([][][]float32, error) {
	out := make([][][]float32, len(tokens))
	for i, seq := range tokens {
		out[i] = make([][]float32, len(seq))
		for t, tok := range seq {
			out[i][t] = append([]float32(nil), b.st.W[int(tok)*V:int(tok+1)*V]...)
		}
	}
	return out, nil
}

// Export implements trainer.Session: logits = Gather(W, input_ids).
func (b *Bigram) Export() (trainer.Exported, error) {
	m := onnxmodel.Model{ProducerName: "tg-tinker-bigram", Graph: onnxmodel.Graph{
		Name:         "bigram",
		Nodes:        []onnxmodel.Node{{Name: "lookup", OpType: "Gather", Inputs: []string{"W", "input_ids"}, Outputs: []string{"logits"}, Attrs: []onnxmodel.Attr{onnxmodel.IntAttr("axis", 0)}}},
		Initializers: []onnxmodel.Tensor{{Name: "W", Dims: []int64{V, V}, Float: b.st.W}},
		Inputs:       []onnxmodel.ValueInfo{{Name: "input_ids", Type: onnxmodel.Int64, Shape: []int64{-1, -1}}},
		Outputs:      []onnxmodel.ValueInfo{{Name: "logits", Type: onnxmodel.Float, Shape: []int64{-1, -1, V}}},
	}}
	enc, err := m.Encode()
	if err != nil {
		return trainer.Exported{}, err
	}
	return trainer.LMPackageFiles(enc, b.forward, []int64{'h', 'e', 'l', 'l', 'o'})
}

// BaseSHA256 implements trainer.Session (the bigram starts from zeros).
func (b *Bigram) BaseSHA256() string {
	return "0000000000000000000000000000000000000000000000000000000000000000"
}

// Context implements trainer.Session.
func (b *Bigram) Context() int { return 256 }
