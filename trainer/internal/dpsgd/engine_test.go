package dpsgd

import (
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/gomlx/gomlx/pkg/core/graph"
	"github.com/gomlx/gomlx/pkg/core/tensors"
)

func testConfig(n int) Config {
	c := DefaultConfig()
	c.SampleRate = 0.25
	c.DatasetSize = n
	c.LR = 0.01
	c.Seed = 7
	return c
}

func newTestEngine(t *testing.T, cfg Config, m Model) *Engine {
	t.Helper()
	e, err := New(cfg, m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// referenceGradients computes each example's gradient alone (batch of one)
// with GoMLX's own autodiff through every operation — independent of the
// engine's backpropagation.
func referenceGradients(t *testing.T, e *Engine, b Batch) [][]float32 {
	t.Helper()
	nP := len(e.specs)
	exec, err := graph.NewExec(e.backend, func(ins []*graph.Node) []*graph.Node {
		bl := newBuilder(ins[0].Graph(), 1, e.specs, ins[:nP])
		bl.mode = linearDirect
		out := e.model.Forward(bl, ins[nP:])
		return graph.Gradient(graph.ReduceAllSum(out.Loss), ins[:nP]...)
	})
	if err != nil {
		t.Fatal(err)
	}
	grads := make([][]float32, nP)
	for ex := range b.Size {
		args := []any{}
		for i, s := range e.specs {
			args = append(args, tensors.FromFlatDataAndDimensions(e.params[i], s.Shape...))
		}
		for i, s := range e.model.Inputs() {
			per := numElements(s.Shape)
			dims := append([]int{1}, s.Shape...)
			switch v := b.Inputs[i].(type) {
			case []float32:
				args = append(args, tensors.FromFlatDataAndDimensions(slices.Clone(v[ex*per:(ex+1)*per]), dims...))
			case []int32:
				args = append(args, tensors.FromFlatDataAndDimensions(slices.Clone(v[ex*per:(ex+1)*per]), dims...))
			}
		}
		outs, err := exec.Exec(args...)
		if err != nil {
			t.Fatal(err)
		}
		for i := range nP {
			grads[i] = append(grads[i], tensors.MustCopyFlatData[float32](outs[i])...)
		}
	}
	return grads
}

func closeTo(a, b, tol float64) bool {
	return math.Abs(a-b) <= tol*(1+math.Max(math.Abs(a), math.Abs(b)))
}

var methods = []struct {
	name   string
	method PerExampleMethod
}{{"tapped", PerExampleTapped}, {"expanded", PerExampleExpanded}}

func TestPerExampleGradientsMatchOneAtATime(t *testing.T) {
	for _, m := range []Model{tinyMLP{}, tinyCNN{}} {
		for _, pm := range methods {
			t.Run(m.Name()+"/"+pm.name, func(t *testing.T) { testPerExampleGradients(t, m, pm.method) })
		}
	}
}

func testPerExampleGradients(t *testing.T, m Model, method PerExampleMethod) {
	ds := newMemDataset(m, 9, 1)
	cfg := testConfig(ds.Len())
	cfg.PerExample = method
	e := newTestEngine(t, cfg, m)
	b, _ := ds.Batch(firstN(9))
	got, normSq, err := e.PerExampleGradients(b)
	if err != nil {
		t.Fatal(err)
	}
	want := referenceGradients(t, e, b)
	wantNormSq := make([]float64, b.Size)
	for i, s := range e.specs {
		if len(got[i]) != len(want[i]) {
			t.Fatalf("%s: %d values, want %d", s.Name, len(got[i]), len(want[i]))
		}
		per := numElements(s.Shape)
		for j := range got[i] {
			if !closeTo(float64(got[i][j]), float64(want[i][j]), 1e-5) {
				t.Fatalf("%s[%d] (example %d) = %g, one-at-a-time autodiff says %g", s.Name, j, j/per, got[i][j], want[i][j])
			}
			wantNormSq[j/per] += float64(want[i][j]) * float64(want[i][j])
		}
	}
	for ex := range b.Size {
		if !closeTo(float64(normSq[ex]), wantNormSq[ex], 1e-5) {
			t.Errorf("example %d: squared norm %g, want %g", ex, normSq[ex], wantNormSq[ex])
		}
		if wantNormSq[ex] == 0 {
			t.Errorf("example %d has a zero gradient: the test would not see a wrong one", ex)
		}
	}

	// The plain (non-DP) sum is the sum of the same gradients.
	cfg.Enabled = false
	plain := newTestEngine(t, cfg, m)
	if _, err := plain.ForwardBackward(b); err != nil {
		t.Fatal(err)
	}
	for i, s := range plain.specs {
		per := numElements(s.Shape)
		for j := range per {
			var sum float64
			for ex := range b.Size {
				sum += float64(want[i][ex*per+j])
			}
			if !closeTo(plain.accGrad[i][j], sum, 1e-5) {
				t.Fatalf("plain %s[%d] = %g, want %g", s.Name, j, plain.accGrad[i][j], sum)
			}
		}
	}
}

func TestClippingBoundsEveryExample(t *testing.T) {
	for _, m := range []Model{tinyMLP{}, tinyCNN{}} {
		for _, pm := range methods {
			t.Run(m.Name()+"/"+pm.name, func(t *testing.T) { testClipping(t, m, pm.method) })
		}
	}
}

func testClipping(t *testing.T, m Model, method PerExampleMethod) {
	ds := newMemDataset(m, 12, 2)
	cfg := testConfig(ds.Len())
	cfg.PerExample = method
	cfg.NoiseMultiplier = 0
	e := newTestEngine(t, cfg, m)
	b, _ := ds.Batch(firstN(ds.Len()))
	per, normSq, err := e.PerExampleGradients(b)
	if err != nil {
		t.Fatal(err)
	}
	norms := make([]float64, b.Size)
	for i, v := range normSq {
		norms[i] = math.Sqrt(float64(v))
	}
	sorted := slices.Clone(norms)
	slices.Sort(sorted)
	// C between the norms: some examples are clipped, some not.
	c := sorted[b.Size/2]
	e.cfg.MaxGradNorm = c

	for ex := range b.Size {
		one, _ := ds.Batch([]int{ex})
		st, err := e.ForwardBackward(one)
		if err != nil {
			t.Fatal(err)
		}
		var got float64
		for _, acc := range e.accGrad {
			for _, v := range acc {
				got += v * v
			}
		}
		got = math.Sqrt(got)
		switch {
		case norms[ex] > c:
			if got > c*(1+1e-5) || !closeTo(got, c, 1e-4) {
				t.Errorf("example %d: norm %g clipped to %g, want %g", ex, norms[ex], got, c)
			}
			if st.ClipFraction != 1 {
				t.Errorf("example %d: clip fraction %g, want 1", ex, st.ClipFraction)
			}
		default:
			// Below C: unchanged, coordinate by coordinate.
			for i, s := range e.specs {
				n := numElements(s.Shape)
				for j := range n {
					if !closeTo(e.accGrad[i][j], float64(per[i][ex*n+j]), 1e-5) {
						t.Fatalf("example %d (norm %g ≤ C %g): %s[%d] = %g, unclipped %g", ex, norms[ex], c, s.Name, j, e.accGrad[i][j], per[i][ex*n+j])
					}
				}
			}
			if st.ClipFraction != 0 {
				t.Errorf("example %d: clip fraction %g, want 0", ex, st.ClipFraction)
			}
		}
		e.resetAccumulator()
	}

	// The whole batch at once (and split into pieces): Σ_b min(1, C/‖g_b‖)·g_b.
	for _, pieces := range []int{0, 5} {
		e.cfg.MaxPhysicalBatch = pieces
		st, err := e.ForwardBackward(b)
		if err != nil {
			t.Fatal(err)
		}
		var clipped int
		for ex := range b.Size {
			if norms[ex] > c {
				clipped++
			}
		}
		if want := float64(clipped) / float64(b.Size); st.ClipFraction != want {
			t.Errorf("pieces %d: clip fraction %g, want %g", pieces, st.ClipFraction, want)
		}
		for i, s := range e.specs {
			n := numElements(s.Shape)
			for j := range n {
				var want float64
				for ex := range b.Size {
					want += math.Min(1, c/(norms[ex]+clipStabilizer)) * float64(per[i][ex*n+j])
				}
				if !closeTo(e.accGrad[i][j], want, 1e-5) {
					t.Fatalf("pieces %d: clipped sum %s[%d] = %g, want %g", pieces, s.Name, j, e.accGrad[i][j], want)
				}
			}
		}
		e.resetAccumulator()
	}
}

func TestNoiseHasStandardDeviationSigmaC(t *testing.T) {
	cfg := testConfig(40)
	cfg.NoiseMultiplier = 1.3
	cfg.MaxGradNorm = 0.7
	cfg.SampleRate = 0.25
	e := newTestEngine(t, cfg, tinyMLP{})
	want := cfg.NoiseMultiplier * cfg.MaxGradNorm / cfg.ExpectedBatchSize()
	var n int
	var sum, sumSq float64
	var within1 int
	for range 300 {
		// An empty Poisson sample: the update is the noise alone.
		if _, err := e.ForwardBackward(Batch{Size: 0, Inputs: []any{[]float32{}, []int32{}}}); err != nil {
			t.Fatal(err)
		}
		if !e.privatizeGradient() {
			t.Fatal("DP step skipped for an empty sample; it must still be taken")
		}
		for _, acc := range e.accGrad {
			for _, v := range acc {
				n++
				sum += v
				sumSq += v * v
				if math.Abs(v) <= want {
					within1++
				}
			}
		}
		e.resetAccumulator()
	}
	mean := sum / float64(n)
	std := math.Sqrt(sumSq/float64(n) - mean*mean)
	t.Logf("%d draws: mean %.3g, std %.4g, want σC/(qN) = %.4g", n, mean, std, want)
	// n ≈ 11,000: the std's relative standard error is ~0.7%.
	if math.Abs(std/want-1) > 0.05 {
		t.Errorf("noise std %g, want %g (±5%%)", std, want)
	}
	if math.Abs(mean) > 5*want/math.Sqrt(float64(n)) {
		t.Errorf("noise mean %g is not 0", mean)
	}
	if frac := float64(within1) / float64(n); math.Abs(frac-0.6827) > 0.03 {
		t.Errorf("%.3f of the noise within one std, Gaussian says 0.683", frac)
	}
}

func TestPoissonSamplingRate(t *testing.T) {
	const n, q, reps = 2000, 0.05, 400
	counts := make([]int, n)
	sizes := make(map[int]bool)
	var total int
	rng := newRNG(false, 0, streamSample, 0)
	for range reps {
		idx := PoissonSample(rng, n, q)
		sizes[len(idx)] = true
		total += len(idx)
		for _, i := range idx {
			counts[i]++
		}
	}
	mean := float64(total) / reps
	sd := math.Sqrt(n * q * (1 - q) / reps)
	if math.Abs(mean-n*q) > 5*sd {
		t.Errorf("mean batch size %.2f, want %.0f ± %.2f", mean, n*q, 5*sd)
	}
	if len(sizes) < 10 {
		t.Errorf("only %d distinct batch sizes in %d draws: the size must vary", len(sizes), reps)
	}
	// Every example is included at rate q: Binomial(reps, q) each, and
	// the counts' spread matches it (chi-square over all examples).
	exp := reps * q
	var chi float64
	for i, c := range counts {
		d := float64(c) - exp
		chi += d * d / (exp * (1 - q))
		if math.Abs(d) > 7*math.Sqrt(exp*(1-q)) {
			t.Fatalf("example %d sampled %d times, want about %.0f", i, c, exp)
		}
	}
	// chi ~ χ²(n): mean n, sd √(2n) ≈ 63.
	if math.Abs(chi-n) > 6*math.Sqrt(2*n) {
		t.Errorf("χ² = %.0f over %d examples, want %d ± %.0f", chi, n, n, 6*math.Sqrt(2*n))
	}
}

func TestNoNoiseHugeClipEqualsPlainSGD(t *testing.T) {
	for _, m := range []Model{tinyMLP{}, tinyCNN{}} {
		t.Run(m.Name(), func(t *testing.T) {
			ds := newMemDataset(m, 40, 3)
			cfg := testConfig(ds.Len())
			cfg.NoiseMultiplier = 0
			cfg.MaxGradNorm = 1e9
			cfg.SampleRate = 10.0 / 40 // q·N equals the batch size used below
			cfg.WeightDecay = 0.01
			dp := newTestEngine(t, cfg, m)
			cfg.Enabled = false
			plain := newTestEngine(t, cfg, m)
			for step := range 4 {
				b, _ := ds.Batch(firstN(40)[step*10 : step*10+10])
				sd, err := dp.Step(b)
				if err != nil {
					t.Fatal(err)
				}
				sp, err := plain.Step(b)
				if err != nil {
					t.Fatal(err)
				}
				if !closeTo(sd.Loss, sp.Loss, 1e-5) || sd.ClipFraction != 0 {
					t.Fatalf("step %d: DP loss %g clip %g, plain loss %g", step, sd.Loss, sd.ClipFraction, sp.Loss)
				}
			}
			a, b := dp.Params(), plain.Params()
			for i := range a {
				for j := range a[i].Data {
					if !closeTo(float64(a[i].Data[j]), float64(b[i].Data[j]), 1e-4) {
						t.Fatalf("%s[%d]: DP-SGD %g, plain %g", a[i].Name, j, a[i].Data[j], b[i].Data[j])
					}
				}
			}
		})
	}
}

func runSampledSteps(t *testing.T, m Model, ds Dataset, steps int) []NamedParam {
	t.Helper()
	e := newTestEngine(t, testConfig(ds.Len()), m)
	for range steps {
		b, err := e.SampleBatch(ds)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Step(b); err != nil {
			t.Fatal(err)
		}
	}
	return e.Params()
}

func paramsEqual(a, b []NamedParam) bool {
	for i := range a {
		if !slices.Equal(a[i].Data, b[i].Data) {
			return false
		}
	}
	return true
}

func TestDeterministicModeReproducesCryptoModeDoesNot(t *testing.T) {
	m := tinyMLP{}
	ds := newMemDataset(m, 40, 4)

	t.Setenv(DeterministicEnv, "true")
	a := runSampledSteps(t, m, ds, 3)
	b := runSampledSteps(t, m, ds, 3)
	if !paramsEqual(a, b) {
		t.Error("TG_DETERMINISTIC=true: two runs with one seed differ")
	}

	t.Setenv(DeterministicEnv, "")
	c := runSampledSteps(t, m, ds, 3)
	d := runSampledSteps(t, m, ds, 3)
	if paramsEqual(c, d) || paramsEqual(a, c) {
		t.Error("crypto-seeded noise repeated across runs")
	}
}

func TestStepsReduceLoss(t *testing.T) {
	m := tinyCNN{}
	ds := newMemDataset(m, 200, 5)
	cfg := testConfig(ds.Len())
	cfg.SampleRate = 0.2
	cfg.NoiseMultiplier = 0.5
	cfg.LR = 0.02
	e := newTestEngine(t, cfg, m)
	before, err := e.Evaluate(ds, 64)
	if err != nil {
		t.Fatal(err)
	}
	for range 30 {
		b, err := e.SampleBatch(ds)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.Step(b); err != nil {
			t.Fatal(err)
		}
	}
	after, err := e.Evaluate(ds, 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("loss %.3f → %.3f, accuracy %.3f → %.3f", before.Loss, after.Loss, before.Accuracy, after.Accuracy)
	if after.Loss >= before.Loss*0.9 {
		t.Errorf("30 DP steps: loss %.3f → %.3f, want a clear decrease", before.Loss, after.Loss)
	}
	if e.Steps() != 30 {
		t.Errorf("Steps() = %d, want 30", e.Steps())
	}
}

func TestAdamWMatchesReference(t *testing.T) {
	cfg := Config{LR: 0.1, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, WeightDecay: 0.5}
	params := [][]float32{{1, -2}}
	s := newAdamState(params)
	grads := [][]float64{{0.5, -1}, {0.25, 2}}
	// Hand-rolled reference, float64.
	theta := []float64{1, -2}
	m := []float64{0, 0}
	v := []float64{0, 0}
	for step, g := range grads {
		s.update(params, [][]float64{g}, cfg)
		tt := float64(step + 1)
		for j := range theta {
			theta[j] -= cfg.LR * cfg.WeightDecay * theta[j]
			m[j] = 0.9*m[j] + 0.1*g[j]
			v[j] = 0.99*v[j] + 0.01*g[j]*g[j]
			mh := m[j] / (1 - math.Pow(0.9, tt))
			vh := v[j] / (1 - math.Pow(0.99, tt))
			theta[j] -= cfg.LR * mh / (math.Sqrt(vh) + cfg.Eps)
		}
	}
	for j := range theta {
		if !closeTo(float64(params[0][j]), theta[j], 1e-6) {
			t.Errorf("θ[%d] = %g, want %g", j, params[0][j], theta[j])
		}
	}
}

func TestParamsRoundTrip(t *testing.T) {
	m := tinyMLP{}
	cfg := testConfig(10)
	e := newTestEngine(t, cfg, m)
	ps := e.Params()
	ps[0].Data[0] = 42
	if e.Params()[0].Data[0] == 42 {
		t.Fatal("Params shares memory with the engine")
	}
	cfg.Seed = 99
	f := newTestEngine(t, cfg, m)
	if err := f.SetParams(ps); err != nil {
		t.Fatal(err)
	}
	if !paramsEqual(f.Params(), ps) {
		t.Error("SetParams(Params()) did not round-trip")
	}
	bad := slices.Clone(ps)
	bad[1] = NamedParam{Name: bad[1].Name, Shape: []int{99}, Data: make([]float32, 99)}
	if err := f.SetParams(bad); err == nil {
		t.Error("SetParams accepted a wrong shape")
	}
	if err := f.SetParams(ps[:2]); err == nil {
		t.Error("SetParams accepted a partial set")
	}
}

func TestConfigValidate(t *testing.T) {
	ok := testConfig(10)
	tests := []struct {
		name string
		edit func(*Config)
	}{
		{"negative sigma", func(c *Config) { c.NoiseMultiplier = -1 }},
		{"zero clip", func(c *Config) { c.MaxGradNorm = 0 }},
		{"rate above one", func(c *Config) { c.SampleRate = 1.5 }},
		{"zero rate", func(c *Config) { c.SampleRate = 0 }},
		{"no dataset size", func(c *Config) { c.DatasetSize = 0 }},
		{"zero lr", func(c *Config) { c.LR = 0 }},
		{"beta one", func(c *Config) { c.Beta2 = 1 }},
		{"nan eps", func(c *Config) { c.Eps = math.NaN() }},
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	for _, tc := range tests {
		c := ok
		tc.edit(&c)
		if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Validate() = %v, want ErrInvalidConfig", tc.name, err)
		}
	}
}

func TestBatchChecks(t *testing.T) {
	e := newTestEngine(t, testConfig(10), tinyMLP{})
	bad := []Batch{
		{Size: 2, Inputs: []any{make([]float32, 12)}},
		{Size: 2, Inputs: []any{make([]float32, 11), make([]int32, 2)}},
		{Size: 2, Inputs: []any{make([]int32, 12), make([]int32, 2)}},
	}
	for i, b := range bad {
		if _, err := e.ForwardBackward(b); err == nil {
			t.Errorf("batch %d accepted", i)
		}
	}
}

func TestCheckpointRestoreContinuesIdentically(t *testing.T) {
	t.Setenv(DeterministicEnv, "true")
	m := tinyMLP{}
	ds := newMemDataset(m, 40, 6)
	cfg := testConfig(ds.Len())
	cfg.NoiseMultiplier = 0 // the continuation must not depend on the noise stream
	a := newTestEngine(t, cfg, m)
	b, _ := ds.Batch(firstN(10))
	for range 3 {
		if _, err := a.Step(b); err != nil {
			t.Fatal(err)
		}
	}
	ck := a.Checkpoint()
	cfg.Seed = 1234
	r := newTestEngine(t, cfg, m)
	if err := r.Restore(ck); err != nil {
		t.Fatal(err)
	}
	if r.Steps() != 3 {
		t.Errorf("restored Steps() = %d, want 3", r.Steps())
	}
	for _, e := range []*Engine{a, r} {
		if _, err := e.Step(b); err != nil {
			t.Fatal(err)
		}
	}
	if !paramsEqual(a.Params(), r.Params()) {
		t.Error("a restored engine's next step differs from the original's")
	}
	// A damaged checkpoint changes nothing.
	before := r.Checkpoint()
	bad := a.Checkpoint()
	bad.AdamV = bad.AdamV[:1]
	if err := r.Restore(bad); err == nil {
		t.Error("Restore accepted a checkpoint with missing moments")
	}
	if !paramsEqual(r.Params(), before.Params) || r.Steps() != before.Steps {
		t.Error("a failed Restore changed the engine")
	}
}

func TestNewBackendAcceptsOnlyPureGo(t *testing.T) {
	for _, bad := range []string{"xla", "xla:cpu", "stablehlo"} {
		t.Setenv(BackendEnv, bad)
		if b, err := NewBackend(); err == nil {
			b.Finalize()
			t.Errorf("%s=%q accepted", BackendEnv, bad)
		}
	}
	t.Setenv(BackendEnv, "go:parallelism=-1")
	b, err := NewBackend()
	if err != nil {
		t.Fatal(err)
	}
	b.Finalize()
}

func TestBackendOptionsUnderRace(t *testing.T) {
	got := backendOptions("parallelism=-1")
	if raceDetector && got != "parallelism=-1,ops_sequential" || !raceDetector && got != "parallelism=-1" {
		t.Errorf("backendOptions = %q (race build: %v)", got, raceDetector)
	}
	if got := backendOptions("parallelism=-1,ops_parallel"); got != "parallelism=-1,ops_parallel" {
		t.Errorf("an explicit ops_ choice was overridden: %q", got)
	}
}

func TestClosedEngineFails(t *testing.T) {
	m := tinyMLP{}
	ds := newMemDataset(m, 4, 8)
	e := newTestEngine(t, testConfig(ds.Len()), m)
	e.Close()
	b, _ := ds.Batch(firstN(4))
	if _, err := e.Step(b); !errors.Is(err, ErrClosed) {
		t.Errorf("Step after Close: %v, want ErrClosed", err)
	}
	if _, err := e.Evaluate(ds, 4); !errors.Is(err, ErrClosed) {
		t.Errorf("Evaluate after Close: %v, want ErrClosed", err)
	}
}

// A logical batch sent in several ForwardBackward calls accumulates to the
// same clipped sum as one call, and OptimStep adds the noise once.
func TestForwardBackwardAccumulatesAcrossCalls(t *testing.T) {
	m := tinyCNN{}
	ds := newMemDataset(m, 12, 9)
	cfg := testConfig(ds.Len())
	cfg.MaxGradNorm = 0.05 // clip most examples
	one := newTestEngine(t, cfg, m)
	parts := newTestEngine(t, cfg, m)
	all, _ := ds.Batch(firstN(12))
	if _, err := one.ForwardBackward(all); err != nil {
		t.Fatal(err)
	}
	for _, idx := range [][]int{{0, 1, 2, 3, 4}, {5, 6, 7}, {8, 9, 10, 11}} {
		b, _ := ds.Batch(idx)
		if _, err := parts.ForwardBackward(b); err != nil {
			t.Fatal(err)
		}
	}
	if parts.accCount != 12 {
		t.Errorf("accumulated %d examples, want 12", parts.accCount)
	}
	for i := range one.accGrad {
		for j := range one.accGrad[i] {
			if !closeTo(one.accGrad[i][j], parts.accGrad[i][j], 1e-5) {
				t.Fatalf("%s[%d]: one call %g, three calls %g", one.specs[i].Name, j, one.accGrad[i][j], parts.accGrad[i][j])
			}
		}
	}
	if err := parts.OptimStep(); err != nil {
		t.Fatal(err)
	}
	if parts.Steps() != 1 || parts.accCount != 0 {
		t.Errorf("after OptimStep: %d steps, %d pending examples; want 1 and 0", parts.Steps(), parts.accCount)
	}
}
