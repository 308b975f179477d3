package lm

import (
	"fmt"
	"math"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/trainer/internal/dpsgd"
)

// IgnoreIndex is the label Hugging Face's causal-LM loss skips.
const IgnoreIndex = -100

// Example is one training sequence: the model reads Tokens, and position i
// is scored on predicting Targets[i] with weight Weights[i] (0 = not
// scored). The three have one length, at most the context; shorter
// examples are padded with weight 0, which the causal mask keeps from
// influencing the real positions.
type Example struct {
	Tokens  []int32
	Targets []int32
	Weights []float32
}

// Validate checks the lengths, the token range and that the weights are
// finite and not negative.
func (e Example) Validate(cfg onnxmodel.LMConfig) error {
	n := len(e.Tokens)
	if n == 0 || n > cfg.Context {
		return fmt.Errorf("%w: %d tokens, want 1..%d", ErrInvalidInput, n, cfg.Context)
	}
	if len(e.Targets) != n || len(e.Weights) != n {
		return fmt.Errorf("%w: %d tokens, %d targets, %d weights", ErrInvalidInput, n, len(e.Targets), len(e.Weights))
	}
	for i := range n {
		if e.Tokens[i] < 0 || int(e.Tokens[i]) >= cfg.Vocab || e.Targets[i] < 0 || int(e.Targets[i]) >= cfg.Vocab {
			return fmt.Errorf("%w: token %d or target %d at %d outside [0, %d)", ErrInvalidInput, e.Tokens[i], e.Targets[i], i, cfg.Vocab)
		}
		if w := float64(e.Weights[i]); !(w >= 0) || math.IsInf(w, 0) {
			return fmt.Errorf("%w: weight %v at %d (want finite, ≥ 0)", ErrInvalidInput, e.Weights[i], i)
		}
	}
	return nil
}

// TextExample is next-byte prediction over text: it reads text[:n-1] and
// predicts text[1:], every position weighted 1. len(text) must be in
// 2..Context+1.
func TextExample(text []byte) Example {
	e := Example{}
	for i := 0; i+1 < len(text); i++ {
		e.Tokens = append(e.Tokens, int32(text[i]))
		e.Targets = append(e.Targets, int32(text[i+1]))
		e.Weights = append(e.Weights, 1)
	}
	return e
}

// TinkerExample maps a Tinker Datum with the cross_entropy loss:
// model_input tokens, loss_fn_inputs target_tokens and weights, one per
// input position (position i predicts target i).
func TinkerExample(modelInput, targetTokens []int64, weights []float32) (Example, error) {
	if len(targetTokens) != len(modelInput) || len(weights) != len(modelInput) {
		return Example{}, fmt.Errorf("%w: %d input tokens, %d targets, %d weights", ErrInvalidInput, len(modelInput), len(targetTokens), len(weights))
	}
	e := Example{Weights: append([]float32(nil), weights...)}
	var err error
	if e.Tokens, err = narrow(modelInput); err != nil {
		return Example{}, err
	}
	if e.Targets, err = narrow(targetTokens); err != nil {
		return Example{}, err
	}
	return e, nil
}

// HFExample maps Hugging Face causal-LM inputs: input_ids, attention_mask
// (nil = all ones) and labels (nil = input_ids), where the logits at
// position i are scored against labels[i+1] and a label of -100 is not
// scored — what transformers' shift-inside-the-model loss does. The
// attention mask must be ones then zeros (right padding: this model has no
// padding-aware positions); the masked tail is dropped.
func HFExample(inputIDs, attentionMask, labels []int64) (Example, error) {
	n := len(inputIDs)
	if attentionMask != nil {
		if len(attentionMask) != n {
			return Example{}, fmt.Errorf("%w: %d input ids, %d mask values", ErrInvalidInput, n, len(attentionMask))
		}
		valid := 0
		for valid < n && attentionMask[valid] == 1 {
			valid++
		}
		for i := valid; i < n; i++ {
			if attentionMask[i] != 0 {
				return Example{}, fmt.Errorf("%w: attention mask must be ones then zeros (right padding)", ErrInvalidInput)
			}
		}
		n = valid
	}
	if labels == nil {
		labels = inputIDs
	} else if len(labels) != len(inputIDs) {
		return Example{}, fmt.Errorf("%w: %d input ids, %d labels", ErrInvalidInput, len(inputIDs), len(labels))
	}
	if n == 0 {
		return Example{}, fmt.Errorf("%w: no unmasked token", ErrInvalidInput)
	}
	tokens, err := narrow(inputIDs[:n])
	if err != nil {
		return Example{}, err
	}
	e := Example{Tokens: tokens, Targets: make([]int32, n), Weights: make([]float32, n)}
	for i := 0; i+1 < n; i++ {
		l := labels[i+1]
		if l == IgnoreIndex {
			continue
		}
		if l < 0 || l > math.MaxInt32 {
			return Example{}, fmt.Errorf("%w: label %d at %d", ErrInvalidInput, l, i+1)
		}
		e.Targets[i], e.Weights[i] = int32(l), 1
	}
	return e, nil
}

func narrow(v []int64) ([]int32, error) {
	out := make([]int32, len(v))
	for i, x := range v {
		if x < 0 || x > math.MaxInt32 {
			return nil, fmt.Errorf("%w: token %d at %d", ErrInvalidInput, x, i)
		}
		out[i] = int32(x)
	}
	return out, nil
}

// Batch packs examples into the engine's batch layout for a model of shape
// cfg: tokens [Size, Context] int32, targets [Size, Context] int32,
// weights [Size, Context] float32, each example padded with weight 0.
func Batch(cfg onnxmodel.LMConfig, examples []Example) (dpsgd.Batch, error) {
	c := cfg.Context
	tokens := make([]int32, len(examples)*c)
	targets := make([]int32, len(examples)*c)
	weights := make([]float32, len(examples)*c)
	for i, e := range examples {
		if err := e.Validate(cfg); err != nil {
			return dpsgd.Batch{}, fmt.Errorf("example %d: %w", i, err)
		}
		copy(tokens[i*c:], e.Tokens)
		copy(targets[i*c:], e.Targets)
		copy(weights[i*c:], e.Weights)
	}
	return dpsgd.Batch{Size: len(examples), Inputs: []any{tokens, targets, weights}}, nil
}

// Dataset is an in-memory dpsgd.Dataset of examples. Config gives the
// vocabulary the tokens are checked against and, as Context, the length
// every example is padded to (LoRA.Dataset sets it).
type Dataset struct {
	Config   onnxmodel.LMConfig
	Examples []Example
}

var _ dpsgd.Dataset = (*Dataset)(nil)

// Len is the number of examples.
func (d *Dataset) Len() int { return len(d.Examples) }

// Batch gathers the examples at the given indices.
func (d *Dataset) Batch(indices []int) (dpsgd.Batch, error) {
	ex := make([]Example, len(indices))
	for i, j := range indices {
		if j < 0 || j >= len(d.Examples) {
			return dpsgd.Batch{}, fmt.Errorf("%w: index %d of %d examples", ErrInvalidInput, j, len(d.Examples))
		}
		ex[i] = d.Examples[j]
	}
	return Batch(d.Config, ex)
}
