// Command train-dp fine-tunes a small language model with differential
// privacy through the TG-Tinker Go SDK (trainer/client) and exports it as a
// signed TGSP package that `tgctl package push` accepts as is. `make demo`
// runs it; it is also the shortest complete use of the SDK:
//
//	export TG_TINKER_API_KEY=tgk_…   # a control-plane API key (operator or admin)
//	tgctl ca show --pem > ca.pem      # the platform CA, to trust its HTTPS
//	go run ./examples/train-dp --server https://127.0.0.1:8000 --ca-file ca.pem --out edge-lm.tgsp
//
// It trains tg-bigram (a byte-bigram LM whose DP-SGD steps take
// milliseconds) on a few sentences: every step sends the whole pool, the
// server keeps each example with probability --sample-rate (Poisson),
// clips each kept example's gradient to norm 1 and adds Gaussian noise of
// --noise times that; the trainer's accountant (RDP) charges every step
// against --target-epsilon. Then it reads the privacy spent, samples the
// model greedily, exports it (the package's dp_cert.json states the same ε)
// and downloads the package. --summary writes what it did as JSON.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"time"

	tinker "github.com/tensorguard/tensorguardflow/trainer/client"
)

// corpus is what the model learns: after "th" it should say "e".
var corpus = []string{
	"the edge keeps the model",
	"keep the keys at the edge",
	"the model never leaves the device",
	"train it with privacy then ship it",
	"the fleet checks every quote",
	"then the agent serves the answer",
	"this is the package they signed",
	"the weights stay in memory",
}

type options struct {
	server, caFile, out, summary string
	model, name, version         string
	steps, copies                int
	noise, sampleRate, epsilon   float64
	delta, learningRate          float64
}

// summary is what --summary writes.
type summary struct {
	TrainingClient string          `json:"training_client"`
	BaseModel      string          `json:"base_model"`
	Privacy        tinker.Privacy  `json:"privacy"`
	Package        string          `json:"package"`
	ArtifactID     string          `json:"artifact_id"`
	SHA256         string          `json:"sha256"`
	DPCert         json.RawMessage `json:"dp_cert"`
	Sample         string          `json:"sample"`
}

func main() {
	var o options
	flag.StringVar(&o.server, "server", os.Getenv(tinker.EnvBaseURL), "the control plane's URL (default $"+tinker.EnvBaseURL+", else "+tinker.DefaultBaseURL+")")
	flag.StringVar(&o.caFile, "ca-file", "", "PEM file of the CA to trust for HTTPS (tgctl ca show --pem)")
	flag.StringVar(&o.model, "base-model", "tg-bigram", "the base model to fine-tune")
	flag.StringVar(&o.name, "name", "edge-lm", "the package's name")
	flag.StringVar(&o.version, "version", "1.0.0", "the package's version")
	flag.IntVar(&o.steps, "steps", 40, "DP-SGD steps")
	flag.IntVar(&o.copies, "copies", 250, "copies of each sentence in the pool sent every step")
	flag.Float64Var(&o.noise, "noise", 1.0, "noise multiplier σ")
	flag.Float64Var(&o.sampleRate, "sample-rate", 0.05, "Poisson sampling rate q")
	flag.Float64Var(&o.learningRate, "learning-rate", 0.2, "Adam's learning rate")
	flag.Float64Var(&o.epsilon, "target-epsilon", 8, "the privacy budget ε: a step past it is refused")
	flag.Float64Var(&o.delta, "delta", 1e-5, "δ")
	flag.StringVar(&o.out, "out", "", "write the package here (default NAME-VERSION.tgsp)")
	flag.StringVar(&o.summary, "summary", "", "write a JSON summary here")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "train-dp: no arguments expected; see -h")
		os.Exit(2)
	}
	if o.out == "" {
		o.out = o.name + "-" + o.version + ".tgsp"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "train-dp:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, w io.Writer) error {
	opts := []tinker.Option{}
	if o.server != "" {
		opts = append(opts, tinker.WithBaseURL(o.server))
	}
	if o.caFile != "" {
		hc, err := httpClientTrusting(o.caFile)
		if err != nil {
			return err
		}
		opts = append(opts, tinker.WithHTTPClient(hc))
	}
	s, err := tinker.NewServiceClient(opts...)
	if err != nil {
		return err
	}
	dp := tinker.DPConfig{Enabled: true, NoiseMultiplier: o.noise, MaxGradNorm: 1, SampleRate: o.sampleRate,
		TargetEpsilon: o.epsilon, TargetDelta: o.delta, Accountant: "rdp"}
	tc, err := s.CreateTrainingClient(ctx, tinker.TrainingClientConfig{BaseModel: o.model,
		Adam: tinker.AdamParams{LearningRate: o.learningRate}, DP: dp})
	if err != nil {
		return fmt.Errorf("create training client: %w", err)
	}
	fmt.Fprintf(w, "training client %s on %s\n", tc.Info.ID, o.model)
	fmt.Fprintf(w, "  DP-SGD: noise σ=%g, clip C=1, Poisson q=%g; budget ε≤%g at δ=%g (rdp)\n", o.noise, o.sampleRate, o.epsilon, o.delta)

	var pool []string
	for range o.copies {
		pool = append(pool, corpus...)
	}
	data := nextByteDatums(pool)
	fmt.Fprintf(w, "  data: %d sentences (%d distinct), sent whole every step\n", len(data), len(corpus))
	for step := 1; step <= o.steps; step++ {
		fb, err := await(tc.ForwardBackward(ctx, data, "cross_entropy"))(ctx, "forward_backward")
		if err != nil {
			return err
		}
		st, err := await(tc.OptimStep(ctx, tinker.AdamParams{}))(ctx, "optim_step")
		if err != nil {
			return err
		}
		if step == 1 || step%10 == 0 || step == o.steps {
			fmt.Fprintf(w, "  step %2d  loss %.3f  kept %3d/%d  ε=%.3f\n", st.Step, fb.Loss, fb.Examples, fb.Sent, st.Epsilon)
		}
	}

	priv, err := tc.Privacy(ctx)
	if err != nil {
		return fmt.Errorf("privacy: %w", err)
	}
	fmt.Fprintf(w, "privacy spent (GET …/privacy): ε=%.4f δ=%g over %d steps (%s); %.2f left\n",
		priv.Epsilon, priv.Delta, priv.Steps, priv.Accountant, priv.RemainingEpsilon)

	smp, err := await(tc.Sample(ctx, tinker.TextInput("th"), 1,
		tinker.SamplingParams{MaxTokens: 10, Temperature: 0}))(ctx, "sample") // temperature 0: greedy
	if err != nil {
		return err
	}
	sample := []byte("th")
	if len(smp.Sequences) > 0 {
		for _, t := range smp.Sequences[0].Tokens {
			sample = append(sample, byte(t))
		}
	}
	fmt.Fprintf(w, "greedy sample: %q -> %q\n", "th", sample)

	exp, err := await(tc.Export(ctx, o.name, o.version))(ctx, "export")
	if err != nil {
		return err
	}
	var cert struct {
		Epsilon float64 `json:"epsilon"`
		Delta   float64 `json:"delta"`
		Steps   int64   `json:"steps"`
	}
	if err := json.Unmarshal(exp.DPCert, &cert); err != nil {
		return fmt.Errorf("export: dp_cert: %w", err)
	}
	// The certificate is the ledger's bound at export: the same number.
	if math.Abs(cert.Epsilon-priv.Epsilon) > 1e-9 || cert.Steps != priv.Steps {
		return fmt.Errorf("export: dp_cert says ε=%g after %d steps, the privacy endpoint ε=%g after %d", cert.Epsilon, cert.Steps, priv.Epsilon, priv.Steps)
	}
	pkg, err := s.DownloadPackage(ctx, exp.ArtifactID)
	if err != nil {
		return fmt.Errorf("download package: %w", err)
	}
	if err := os.WriteFile(o.out, pkg, 0o600); err != nil {
		return err
	}
	fmt.Fprintf(w, "exported %s@%s: %d bytes, sha256 %.16s…, dp_cert ε=%.4f δ=%g\n", exp.Name, exp.Version, len(pkg), exp.SHA256, cert.Epsilon, cert.Delta)
	fmt.Fprintf(w, "wrote %s (signed by the tenant's trainer key, encrypted to the control plane)\n", o.out)

	if o.summary != "" {
		b, err := json.MarshalIndent(summary{TrainingClient: tc.Info.ID, BaseModel: o.model, Privacy: priv,
			Package: exp.Name + "@" + exp.Version, ArtifactID: exp.ArtifactID, SHA256: exp.SHA256,
			DPCert: exp.DPCert, Sample: string(sample)}, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(o.summary, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// await takes what submitting an operation returned and gives a function
// that waits for its result: await(tc.OptimStep(ctx, p))(ctx, "optim_step").
func await[T any](f *tinker.Future[T], err error) func(ctx context.Context, op string) (T, error) {
	return func(ctx context.Context, op string) (T, error) {
		var zero T
		if err != nil {
			return zero, fmt.Errorf("%s: %w", op, err)
		}
		v, err := f.Result(ctx)
		if err != nil {
			if code := tinker.Code(err); code != "" {
				return zero, fmt.Errorf("%s (future %s): %s: %w", op, f.ID, code, err)
			}
			return zero, fmt.Errorf("%s (future %s): %w", op, f.ID, err)
		}
		return v, nil
	}
}

// nextByteDatums are Tinker datums teaching each text's next byte: the
// input is the text but its last byte, the targets the text from its
// second byte.
func nextByteDatums(texts []string) []tinker.Datum {
	out := make([]tinker.Datum, 0, len(texts))
	for _, s := range texts {
		tgt := make([]float64, len(s)-1)
		for i := 1; i < len(s); i++ {
			tgt[i-1] = float64(s[i])
		}
		out = append(out, tinker.Datum{ModelInput: tinker.TextInput(s[:len(s)-1]),
			LossFnInputs: map[string]tinker.TensorData{"target_tokens": {Data: tgt}}})
	}
	return out
}

// httpClientTrusting returns an HTTP client that trusts the CAs in file.
func httpClientTrusting(file string) (*http.Client, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("ca file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, errors.New("ca file: no PEM certificate in " + file)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return &http.Client{Timeout: 90 * time.Second, Transport: tr}, nil
}
