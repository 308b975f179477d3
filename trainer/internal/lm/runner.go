package lm

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/gomlx/gomlx/backends"
	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/trainer/internal/dpsgd"
)

// ErrInvalidInput wraps every error about tokens or sampling parameters a
// caller passed (an empty prompt, a token outside the vocabulary, a
// negative max_tokens, …).
var ErrInvalidInput = errors.New("lm: invalid input")

// minBucket is the shortest padded sequence the Runner compiles a graph
// for; lengths go up in powers of two from there to the context.
const minBucket = 8

// Runner evaluates one LM's weights in GoMLX for inference: logits for a
// batch, and sampling. Its weights are graph inputs, not constants, so a
// handful of compiled graphs (one per padded sequence length) serve every
// call. It is safe for concurrent use; calls are serialised.
type Runner struct {
	cfg     onnxmodel.LMConfig
	backend backends.Backend
	weights []*tensors.Tensor // onnxmodel.LM.Params order

	mu         sync.Mutex
	execLogits *graph.Exec // weights, tokens [B, T] → logits [B, T, V]
	execLast   *graph.Exec // weights, tokens [1, T], position [] → logits [V]
}

// NewRunner copies m's weights (which must be valid and finite) into a
// Runner on the process-wide GoMLX backend (dpsgd.SharedBackend).
func NewRunner(m onnxmodel.LM) (*Runner, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	backend, err := dpsgd.SharedBackend()
	if err != nil {
		return nil, err
	}
	r := &Runner{cfg: m.Config, backend: backend}
	for _, p := range m.Params() {
		r.weights = append(r.weights, tensors.FromFlatDataAndDimensions(slices.Clone(p.Data), p.Shape...))
	}
	nw := len(r.weights)
	r.execLogits, err = graph.NewExec(backend, func(ins []*graph.Node) []*graph.Node {
		n := weightsAsParams(r.cfg, ins[:nw], graph.DotGeneral)
		return []*graph.Node{n.logits(n.hidden(ins[nw]))}
	})
	if err != nil {
		return nil, fmt.Errorf("lm: compile logits graph: %w", err)
	}
	r.execLast, err = graph.NewExec(backend, func(ins []*graph.Node) []*graph.Node {
		n := weightsAsParams(r.cfg, ins[:nw], graph.DotGeneral)
		h := n.hidden(ins[nw]) // [1, T, D]
		seq, d := h.Shape().Dimensions[1], h.Shape().Dimensions[2]
		last := graph.Gather(graph.Reshape(h, seq, d), graph.Reshape(ins[nw+1], 1, 1)) // [1, D]
		return []*graph.Node{graph.Reshape(n.logits(last), r.cfg.Vocab)}
	})
	if err != nil {
		return nil, fmt.Errorf("lm: compile sampling graph: %w", err)
	}
	r.execLogits.SetMaxCache(16)
	r.execLast.SetMaxCache(16)
	return r, nil
}

// Config is the shape of the Runner's LM.
func (r *Runner) Config() onnxmodel.LMConfig { return r.cfg }

// Logits returns the logits [batch][seq][Vocab] of a rectangular batch of
// token sequences (1 ≤ seq ≤ Context, tokens in [0, Vocab)): what
// onnxmodel.LM.Forward computes, in float32 with GoMLX. Sequences are
// padded to a bucket length (see nextLogits) so that few graphs are
// compiled.
func (r *Runner) Logits(tokens [][]int32) ([][][]float32, error) {
	if len(tokens) == 0 || len(tokens[0]) == 0 {
		return nil, fmt.Errorf("%w: empty batch or sequence", ErrInvalidInput)
	}
	seq := len(tokens[0])
	padded := bucketLen(seq, r.cfg.Context)
	flat := make([]int32, len(tokens)*padded)
	for b, row := range tokens {
		if len(row) != seq {
			return nil, fmt.Errorf("%w: ragged batch", ErrInvalidInput)
		}
		if err := r.checkTokens(row); err != nil {
			return nil, err
		}
		copy(flat[b*padded:], row)
	}
	args := r.args(tensors.FromFlatDataAndDimensions(flat, len(tokens), padded))
	r.mu.Lock()
	outs, err := r.execLogits.Exec(args...)
	r.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("lm: run forward: %w", err)
	}
	defer finalizeAll(outs)
	data := tensors.MustCopyFlatData[float32](outs[0])
	v := r.cfg.Vocab
	res := make([][][]float32, len(tokens))
	for b := range res {
		res[b] = make([][]float32, seq)
		for i := range seq {
			off := (b*padded + i) * v
			res[b][i] = data[off : off+v : off+v]
		}
	}
	return res, nil
}

// TargetLogprobs returns, for each example, log p(Targets[i] | Tokens[..i])
// at every position (weights are not applied): what Tinker's forward
// returns as logprobs. The examples are evaluated one by one at their own
// length.
func (r *Runner) TargetLogprobs(examples []Example) ([][]float32, error) {
	out := make([][]float32, len(examples))
	for i, e := range examples {
		if err := e.Validate(r.cfg); err != nil {
			return nil, fmt.Errorf("example %d: %w", i, err)
		}
		logits, err := r.Logits([][]int32{e.Tokens})
		if err != nil {
			return nil, err
		}
		out[i] = make([]float32, len(e.Tokens))
		for j, row := range logits[0] {
			out[i][j] = float32(logSoftmaxAt(row, int(e.Targets[j])))
		}
	}
	return out, nil
}

// nextLogits returns the logits after the last of tokens (1 ≤ len ≤
// Context), padding the sequence to a bucket length so that few graphs are
// compiled. Padding goes after the real tokens, which the causal mask
// keeps from influencing them.
func (r *Runner) nextLogits(tokens []int32) ([]float32, error) {
	n := len(tokens)
	padded := make([]int32, bucketLen(n, r.cfg.Context))
	copy(padded, tokens)
	args := r.args(tensors.FromFlatDataAndDimensions(padded, 1, len(padded)), int32(n-1))
	r.mu.Lock()
	outs, err := r.execLast.Exec(args...)
	r.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("lm: run forward: %w", err)
	}
	defer finalizeAll(outs)
	return tensors.MustCopyFlatData[float32](outs[0]), nil
}

// bucketLen is the padded length for n tokens: the next power of two from
// minBucket, at most context.
func bucketLen(n, context int) int {
	b := minBucket
	for b < n {
		b *= 2
	}
	return min(b, max(context, n))
}

func (r *Runner) args(rest ...any) []any {
	args := make([]any, 0, len(r.weights)+len(rest))
	for _, w := range r.weights {
		args = append(args, w)
	}
	return append(args, rest...)
}

func (r *Runner) checkTokens(tokens []int32) error {
	if len(tokens) > r.cfg.Context {
		return fmt.Errorf("%w: %d tokens, context is %d", ErrInvalidInput, len(tokens), r.cfg.Context)
	}
	for i, t := range tokens {
		if t < 0 || int(t) >= r.cfg.Vocab {
			return fmt.Errorf("%w: token %d at %d outside [0, %d)", ErrInvalidInput, t, i, r.cfg.Vocab)
		}
	}
	return nil
}

func finalizeAll(ts []*tensors.Tensor) {
	for _, t := range ts {
		_ = t.FinalizeAll()
	}
}
