package trainer

import (
	"context"

	"github.com/tensorguard/tensorguardflow/trainer/client"
)

// Example is one training sequence: the model reads Input and is scored on
// predicting Targets[i] at position i, weighted by Weights[i] (0 ignores a
// position, as labels of -100 do).
type Example struct {
	Input   []int32
	Targets []int32
	Weights []float32
}

// StepStats describe a forward(-backward) pass.
type StepStats struct {
	Loss         float64
	Examples     int
	ClipFraction float64
}

// DPParams are the resolved differential-privacy settings of a session.
type DPParams struct {
	Enabled         bool
	NoiseMultiplier float64
	MaxGradNorm     float64
	SampleRate      float64
}

// Exported is a trained model ready to package: an ONNX graph and the
// convention files (docs/packages.md) describing its inputs and outputs and
// self-test cases computed by the trainer's own forward pass.
type Exported struct {
	Files map[string][]byte // path in the package → content
}

// Session is one training client's model: its base model, trainable
// parameters, optimizer state and gradient accumulator. Calls are
// serialized by the queue; ctx ends a long call early (cancel).
type Session interface {
	// ForwardBackward adds the examples' (clipped, with DP) gradients to
	// the accumulator. expected is the expected number of examples per
	// step (DP normalizes the noised sum by it).
	ForwardBackward(ctx context.Context, ex []Example, expected float64) (StepStats, error)
	// Forward scores the examples without touching gradients.
	Forward(ctx context.Context, ex []Example) (StepStats, error)
	// OptimStep applies the accumulated gradient (noised once, with DP)
	// with AdamW and clears the accumulator.
	OptimStep(ctx context.Context, adam client.AdamParams) error
	// Sample generates n completions of prompt.
	Sample(ctx context.Context, prompt []int32, n int, p client.SamplingParams) ([]client.SampledSequence, error)
	// MarshalState and UnmarshalState save and restore everything above.
	MarshalState() ([]byte, error)
	UnmarshalState(b []byte) error
	// Export merges what was trained into the base model.
	Export() (Exported, error)
	// BaseSHA256 identifies the base checkpoint.
	BaseSHA256() string
	// Context is the longest sequence the model takes.
	Context() int
}

// Factory makes a session for a base model.
type Factory func(cfg client.TrainingClientConfig, dp DPParams) (Session, error)
