package trainer

import (
	"fmt"
	"math"

	"github.com/tensorguard/tensorguardflow/trainer/client"
)

// vocab is the byte-level models' vocabulary.
const vocab = 256

func mathFloat32bits(f float32) uint32 { return math.Float32bits(f) }

// examples turns a forward_backward body into training examples: Tinker
// Datums (model_input, loss_fn_inputs target_tokens and optional weights,
// loss_fn cross_entropy) or Hugging Face rows (input_ids, optional
// attention_mask, labels with -100 ignored; the model predicts labels[t+1]
// from input_ids[..t], as a causal LM shifts them).
func examples(r client.ForwardBackwardRequest, context int) ([]Example, error) {
	hf := len(r.InputIDs) > 0
	switch {
	case hf && len(r.Data) > 0:
		return nil, fmt.Errorf("send data (Tinker datums) or input_ids (Hugging Face rows), not both")
	case !hf && len(r.Data) == 0:
		return nil, fmt.Errorf("no examples: send data or input_ids")
	case r.LossFn != "" && r.LossFn != "cross_entropy":
		return nil, fmt.Errorf("loss_fn %q is not supported (cross_entropy)", r.LossFn)
	}
	var out []Example
	if hf {
		if r.AttentionMask != nil && len(r.AttentionMask) != len(r.InputIDs) {
			return nil, fmt.Errorf("attention_mask has %d rows, input_ids %d", len(r.AttentionMask), len(r.InputIDs))
		}
		if r.Labels != nil && len(r.Labels) != len(r.InputIDs) {
			return nil, fmt.Errorf("labels has %d rows, input_ids %d", len(r.Labels), len(r.InputIDs))
		}
		for i, ids := range r.InputIDs {
			if len(ids) < 2 {
				return nil, fmt.Errorf("input_ids[%d]: a causal LM needs at least 2 tokens", i)
			}
			labels := ids
			if r.Labels != nil {
				if labels = r.Labels[i]; len(labels) != len(ids) {
					return nil, fmt.Errorf("labels[%d] has %d tokens, input_ids[%d] %d", i, len(labels), i, len(ids))
				}
			}
			var mask []int
			if r.AttentionMask != nil {
				if mask = r.AttentionMask[i]; len(mask) != len(ids) {
					return nil, fmt.Errorf("attention_mask[%d] has %d values, input_ids[%d] %d", i, len(mask), i, len(ids))
				}
			}
			n := len(ids) - 1
			e := Example{Input: make([]int32, n), Targets: make([]int32, n), Weights: make([]float32, n)}
			for t := range n {
				if err := checkToken(ids[t]); err != nil {
					return nil, fmt.Errorf("input_ids[%d][%d]: %v", i, t, err)
				}
				e.Input[t] = int32(ids[t])
				lab := labels[t+1]
				if lab == -100 || (mask != nil && mask[t+1] == 0) {
					continue
				}
				if err := checkToken(lab); err != nil {
					return nil, fmt.Errorf("labels[%d][%d]: %v", i, t+1, err)
				}
				e.Targets[t], e.Weights[t] = int32(lab), 1
			}
			if err := checkToken(ids[n]); err != nil {
				return nil, fmt.Errorf("input_ids[%d][%d]: %v", i, n, err)
			}
			out = append(out, e)
		}
	} else {
		for i, d := range r.Data {
			in := d.ModelInput.Tokens()
			if len(in) == 0 {
				return nil, fmt.Errorf("data[%d]: empty model_input", i)
			}
			for k := range d.LossFnInputs {
				if k != "target_tokens" && k != "weights" {
					return nil, fmt.Errorf("data[%d]: unknown loss_fn_inputs %q (target_tokens, weights)", i, k)
				}
			}
			tgt, ok := d.LossFnInputs["target_tokens"]
			if !ok || len(tgt.Data) != len(in) {
				return nil, fmt.Errorf("data[%d]: loss_fn_inputs.target_tokens must have one value per model_input token (%d)", i, len(in))
			}
			w, hasW := d.LossFnInputs["weights"]
			if hasW && len(w.Data) != len(in) {
				return nil, fmt.Errorf("data[%d]: loss_fn_inputs.weights has %d values, want %d", i, len(w.Data), len(in))
			}
			e := Example{Input: make([]int32, len(in)), Targets: make([]int32, len(in)), Weights: make([]float32, len(in))}
			for t, tok := range in {
				if err := checkToken(tok); err != nil {
					return nil, fmt.Errorf("data[%d].model_input[%d]: %v", i, t, err)
				}
				e.Input[t] = int32(tok)
				v := tgt.Data[t]
				if v != math.Trunc(v) {
					return nil, fmt.Errorf("data[%d].target_tokens[%d]: %v is not a token", i, t, v)
				}
				if err := checkToken(int(v)); err != nil {
					return nil, fmt.Errorf("data[%d].target_tokens[%d]: %v", i, t, err)
				}
				e.Targets[t], e.Weights[t] = int32(v), 1
				if hasW {
					wt := w.Data[t]
					if wt < 0 || math.IsNaN(wt) || math.IsInf(wt, 0) {
						return nil, fmt.Errorf("data[%d].weights[%d]: %v must be a finite non-negative number", i, t, wt)
					}
					e.Weights[t] = float32(wt)
				}
			}
			out = append(out, e)
		}
	}
	for i, e := range out {
		if len(e.Input) > context {
			return nil, fmt.Errorf("example %d has %d tokens; the model's context is %d", i, len(e.Input), context)
		}
	}
	return out, nil
}

func checkToken(v int) error {
	if v < 0 || v >= vocab {
		return fmt.Errorf("token %d is outside the vocabulary [0, %d)", v, vocab)
	}
	return nil
}
