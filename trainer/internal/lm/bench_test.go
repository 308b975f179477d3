package lm

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/trainer/internal/dpsgd"
)

// BenchmarkLoRAStep times a DP-SGD step (per-example clipping + noise)
// against the plain mean-gradient step of the same LoRA model on the same
// batches, interleaved in one run: the shipped base model, the default
// adapters (rank 8 on wq and wv), 32 examples of the full context. It
// reports the median wall time of each and their ratio.
//
//	go test -run '^$' -bench LoRAStep -benchtime 10x ./trainer/internal/lm
func BenchmarkLoRAStep(b *testing.B) {
	base, _, err := LoadBase()
	if err != nil {
		b.Fatal(err)
	}
	m, err := NewLoRA(base, DefaultLoRAConfig())
	if err != nil {
		b.Fatal(err)
	}
	text := bytes.Repeat([]byte("a small animal that lives in the forest and eats nuts and seeds; "), 40)
	const batch = 32
	var examples []Example
	for i := range batch {
		at := i * 37
		examples = append(examples, TextExample(text[at:at+base.Config.Context+1]))
	}
	bt, err := m.Batch(examples)
	if err != nil {
		b.Fatal(err)
	}
	cfg := dpsgd.DefaultConfig()
	cfg.SampleRate, cfg.DatasetSize = 0.01, 100*batch
	cfg.BucketMultiple = batch
	dp, err := dpsgd.New(cfg, m)
	if err != nil {
		b.Fatal(err)
	}
	cfg.Enabled = false
	plain, err := dpsgd.New(cfg, m)
	if err != nil {
		b.Fatal(err)
	}
	step := func(e *dpsgd.Engine) time.Duration {
		t0 := time.Now()
		if _, err := e.Step(bt); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	step(dp) // compile
	step(plain)
	var tdp, tplain []time.Duration
	for b.Loop() {
		tdp = append(tdp, step(dp))
		tplain = append(tplain, step(plain))
	}
	med := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2]) / float64(time.Millisecond)
	}
	mdp, mplain := med(tdp), med(tplain)
	b.ReportMetric(mdp, "dp-ms/step")
	b.ReportMetric(mplain, "plain-ms/step")
	b.ReportMetric(mdp/mplain, "dp/plain")
	b.ReportMetric(float64(batch*base.Config.Context)/(mdp/1000), "dp-tokens/s")
}
