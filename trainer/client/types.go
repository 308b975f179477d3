package client

import (
	"encoding/json"
	"time"
)

// TrainingClientConfig creates a training client (POST /v1/training_clients).
type TrainingClientConfig struct {
	// BaseModel names the model to fine-tune ("tg-lm-base").
	BaseModel string `json:"base_model"`
	// LoRA configures the adapters; rank 0 takes the default (8).
	LoRA LoRAConfig `json:"lora,omitempty"`
	// Adam is the optimizer's default; each OptimStep may override it.
	Adam AdamParams `json:"adam,omitempty"`
	DP   DPConfig   `json:"dp_config"`
	// Seed seeds parameter initialisation (and, with TG_DETERMINISTIC=true
	// on the server, sampling and noise).
	Seed uint64 `json:"seed,omitempty"`
}

// LoRAConfig sets the low-rank adapters.
type LoRAConfig struct {
	Rank  int     `json:"rank,omitempty"`
	Alpha float64 `json:"alpha,omitempty"`
}

// AdamParams are AdamW's hyper-parameters (decoupled weight decay).
type AdamParams struct {
	LearningRate float64 `json:"learning_rate,omitempty"`
	Beta1        float64 `json:"beta1,omitempty"`
	Beta2        float64 `json:"beta2,omitempty"`
	Eps          float64 `json:"eps,omitempty"`
	WeightDecay  float64 `json:"weight_decay,omitempty"`
}

// DPConfig is the differential-privacy configuration of a training client.
// Sampling is Poisson: each example sent to forward_backward is kept
// independently with probability SampleRate (or BatchSize/DatasetSize),
// which is what the accountant assumes.
type DPConfig struct {
	Enabled         bool    `json:"enabled"`
	NoiseMultiplier float64 `json:"noise_multiplier,omitempty"`
	MaxGradNorm     float64 `json:"max_grad_norm,omitempty"`
	TargetEpsilon   float64 `json:"target_epsilon,omitempty"`
	TargetDelta     float64 `json:"target_delta,omitempty"`
	SampleRate      float64 `json:"sample_rate,omitempty"`
	DatasetSize     int     `json:"dataset_size,omitempty"`
	BatchSize       int     `json:"batch_size,omitempty"`
	// Accountant is rdp (default), prv or moments.
	Accountant string `json:"accountant,omitempty"`
	// PlannedSteps, with TargetEpsilon and no NoiseMultiplier, has the
	// server choose the smallest noise multiplier that reaches the target
	// after that many steps.
	PlannedSteps int `json:"planned_steps,omitempty"`
}

// TrainingClientInfo is a training client as the API shows it.
type TrainingClientInfo struct {
	ID        string               `json:"id"`
	Config    TrainingClientConfig `json:"config"`
	CreatedAt time.Time            `json:"created_at"`
	Steps     int64                `json:"steps"`
	// BaseModelSHA256 identifies the base checkpoint.
	BaseModelSHA256 string `json:"base_model_sha256,omitempty"`
}

// ModelInput is a token sequence, as Tinker sends it: chunks of encoded
// text (byte tokens for the byte-level LM).
type ModelInput struct {
	Chunks []Chunk `json:"chunks"`
}

// Chunk is one piece of a ModelInput.
type Chunk struct {
	Type   string `json:"type,omitempty"` // "encoded_text"
	Tokens []int  `json:"tokens"`
}

// TextInput is a ModelInput of s's bytes.
func TextInput(s string) ModelInput {
	t := make([]int, len(s))
	for i := range len(s) {
		t[i] = int(s[i])
	}
	return ModelInput{Chunks: []Chunk{{Type: "encoded_text", Tokens: t}}}
}

// Tokens returns the input's tokens, the chunks joined.
func (m ModelInput) Tokens() []int {
	var out []int
	for _, c := range m.Chunks {
		out = append(out, c.Tokens...)
	}
	return out
}

// TensorData is a dense tensor (Tinker's loss_fn_inputs values).
type TensorData struct {
	Data  []float64 `json:"data"`
	DType string    `json:"dtype,omitempty"` // int64 or float32
	Shape []int     `json:"shape,omitempty"`
}

// Datum is one training example in Tinker's form: model_input is the
// sequence fed to the model, loss_fn_inputs the per-position targets
// ("target_tokens") and optional "weights".
type Datum struct {
	ModelInput   ModelInput            `json:"model_input"`
	LossFnInputs map[string]TensorData `json:"loss_fn_inputs"`
}

// ForwardBackwardRequest is the body of forward_backward and forward:
// Tinker Datums with loss_fn "cross_entropy", or Hugging Face-style rows
// (input_ids, attention_mask, labels with -100 ignored), not both.
type ForwardBackwardRequest struct {
	Data          []Datum `json:"data,omitempty"`
	LossFn        string  `json:"loss_fn,omitempty"`
	InputIDs      [][]int `json:"input_ids,omitempty"`
	AttentionMask [][]int `json:"attention_mask,omitempty"`
	Labels        [][]int `json:"labels,omitempty"`
}

// ForwardBackwardResult is what forward_backward and forward return.
type ForwardBackwardResult struct {
	// Loss is the mean per-example loss of the examples used.
	Loss float64 `json:"loss"`
	// Examples is how many examples were used: with DP, the Poisson
	// sample of those sent.
	Examples int `json:"examples"`
	// Sent is how many examples the request carried.
	Sent int `json:"sent"`
	// ClipFraction is the fraction of used examples whose gradient was
	// clipped (DP only).
	ClipFraction float64            `json:"clip_fraction,omitempty"`
	Metrics      map[string]float64 `json:"metrics,omitempty"`
}

// OptimStepRequest is the body of optim_step (zero fields: the client's
// configured AdamParams).
type OptimStepRequest struct {
	AdamParams AdamParams `json:"adam_params"`
}

// OptimStepResult reports a step and the privacy spent after it.
type OptimStepResult struct {
	Step    int64   `json:"step"`
	Epsilon float64 `json:"epsilon,omitempty"`
}

// SamplingParams control generation.
type SamplingParams struct {
	MaxTokens   int      `json:"max_tokens,omitempty"`
	Temperature float64  `json:"temperature"`
	TopK        int      `json:"top_k,omitempty"`
	TopP        float64  `json:"top_p,omitempty"`
	Stop        []string `json:"stop,omitempty"`
	Seed        *uint64  `json:"seed,omitempty"`
}

// SampleRequest is the body of sample.
type SampleRequest struct {
	Prompt         ModelInput     `json:"prompt"`
	NumSamples     int            `json:"num_samples,omitempty"`
	SamplingParams SamplingParams `json:"sampling_params"`
}

// SampledSequence is one completion.
type SampledSequence struct {
	Tokens     []int  `json:"tokens"`
	Text       string `json:"text"`
	StopReason string `json:"stop_reason"` // "stop" or "length"
}

// SampleResult is what sample returns.
type SampleResult struct {
	Sequences []SampledSequence `json:"sequences"`
}

// SaveStateRequest names a checkpoint.
type SaveStateRequest struct {
	Name string `json:"name,omitempty"`
}

// SaveStateResult points at the saved checkpoint.
type SaveStateResult struct {
	Path string `json:"path"` // tinker://<client>/<artifact>
}

// LoadStateRequest loads a checkpoint saved by this tenant.
type LoadStateRequest struct {
	Path string `json:"path"`
}

// LoadStateResult reports the restored step count.
type LoadStateResult struct {
	Step int64 `json:"step"`
}

// ExportRequest exports the model as a TGSP package.
type ExportRequest struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// ExportResult describes the package; GET …/artifacts/{id} downloads it.
type ExportResult struct {
	ArtifactID string          `json:"artifact_id"`
	Name       string          `json:"name"`
	Version    string          `json:"version"`
	SHA256     string          `json:"sha256"`
	Size       int64           `json:"size"`
	DPCert     json.RawMessage `json:"dp_cert"`
}

// FutureInfo is the state of an asynchronous operation.
type FutureInfo struct {
	ID         string    `json:"future_id"`
	ClientID   string    `json:"training_client_id"`
	Op         string    `json:"op"`
	Status     string    `json:"status"` // queued, running, succeeded, failed, cancelled
	CreatedAt  time.Time `json:"created_at"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	Error      *Error    `json:"error,omitempty"`
}

// Privacy is the privacy a training client has spent.
type Privacy struct {
	Enabled          bool    `json:"enabled"`
	Accountant       string  `json:"accountant,omitempty"`
	Epsilon          float64 `json:"epsilon"`
	Delta            float64 `json:"delta"`
	Steps            int64   `json:"steps"`
	SampleRate       float64 `json:"sample_rate,omitempty"`
	NoiseMultiplier  float64 `json:"noise_multiplier,omitempty"`
	TargetEpsilon    float64 `json:"target_epsilon,omitempty"`
	RemainingEpsilon float64 `json:"remaining_epsilon,omitempty"`
	// RemainingSteps is how many more steps fit the budget.
	RemainingSteps int64 `json:"remaining_steps,omitempty"`
}

// Error is the API's error body's inner object.
type Error struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id,omitempty"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }
