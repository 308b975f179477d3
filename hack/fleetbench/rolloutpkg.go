package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// The package the rollout phase ships: a real model in the agent's
// convention (docs/packages.md), so that the real agents install it all
// the way through ONNX Runtime and its self-test.
const (
	rolloutPkgName    = "rollout-bench"
	rolloutPkgVersion = "1.0.0"
	// rolloutModelIn and rolloutModelOut are the MLP's input and output
	// widths; its hidden width is chosen so that the weights (and so the
	// model file and the package) come to BENCH_ROLLOUT_MIB.
	rolloutModelIn  = 4096
	rolloutModelOut = 10
	rolloutSeed     = 20261127
)

// modelSpec and selfTest are tg-model.json and selftest.json (the agent's
// types live in agent/internal/install, which hack/ cannot import; the
// agent refuses unknown fields, so these carry exactly the documented
// ones).
type modelSpec struct {
	Schema   string   `json:"schema"`
	Runtime  string   `json:"runtime"`
	Model    string   `json:"model"`
	Inputs   []string `json:"inputs"`
	Outputs  []string `json:"outputs"`
	SelfTest string   `json:"selftest"`
}

type tensorJSON struct {
	Shape []int64   `json:"shape"`
	Data  []float32 `json:"data"`
}

type selfTestCase struct {
	Name    string                `json:"name"`
	Inputs  map[string]tensorJSON `json:"inputs"`
	Outputs map[string]tensorJSON `json:"outputs"`
}

type selfTestFile struct {
	Schema    string         `json:"schema"`
	Tolerance float64        `json:"tolerance"`
	RTol      float64        `json:"rtol"`
	Cases     []selfTestCase `json:"cases"`
}

// rolloutPackage is the built package and the keys around it.
type rolloutPackage struct {
	path       string // the .tgsp file
	size       int64
	modelBytes int64
	hidden     int
	signerKey  string // PREFIX of the publisher's key pair (tgsp keygen)
	benchRcpt  string // PREFIX of a second recipient, for the tgsp baseline
	packS      float64
}

// buildRolloutPackage writes a model directory whose ONNX MLP weighs about
// mib MiB (tg-model.json, model.onnx, selftest.json with outputs from the
// pure-Go reference forward pass) and packs it with the real tgsp binary,
// for the control plane's recipient key and a bench recipient whose
// private key the tgsp unpack baseline uses.
func buildRolloutPackage(ctx context.Context, tgspBin, dir string, mib int, cpRecipientPEM string) (*rolloutPackage, error) {
	in := filepath.Join(dir, "model")
	keys := filepath.Join(dir, "keys")
	for _, d := range []string{in, keys} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	p := &rolloutPackage{path: filepath.Join(dir, rolloutPkgName+"-"+rolloutPkgVersion+".tgsp"),
		signerKey: filepath.Join(keys, "publisher"), benchRcpt: filepath.Join(keys, "bench")}
	// W1 is In×Hidden and W2 Hidden×Out float32s.
	p.hidden = max(1, int((int64(mib)<<20)/(4*(rolloutModelIn+rolloutModelOut))))
	mlp := onnxmodel.NewMLP(rolloutModelIn, p.hidden, rolloutModelOut, rolloutSeed)
	x := onnxmodel.RandomInputs(2*rolloutModelIn, rolloutSeed+1)
	out, err := mlp.Forward(x)
	if err != nil {
		return nil, err
	}
	model, err := mlp.Encode()
	if err != nil {
		return nil, err
	}
	mlp = onnxmodel.MLP{} // drop the weights before packing
	p.modelBytes = int64(len(model))
	err = os.WriteFile(filepath.Join(in, "model.onnx"), model, 0o600)
	model = nil
	if err != nil {
		return nil, err
	}
	spec := modelSpec{Schema: "tg.model.v1", Runtime: "onnxruntime", Model: "model.onnx",
		Inputs: []string{onnxmodel.MLPInput}, Outputs: []string{onnxmodel.MLPLogits, onnxmodel.MLPProbs, onnxmodel.MLPClass},
		SelfTest: "selftest.json"}
	// Logits sum 16k products of float32s: ONNX Runtime's kernels land
	// within a few ulps of the float64 reference, far inside these bounds.
	st := selfTestFile{Schema: "tg.selftest.v1", Tolerance: 1e-4, RTol: 1e-3, Cases: []selfTestCase{{
		Name:   "two random rows",
		Inputs: map[string]tensorJSON{onnxmodel.MLPInput: {Shape: []int64{2, rolloutModelIn}, Data: x}},
		Outputs: map[string]tensorJSON{
			onnxmodel.MLPLogits: {Shape: []int64{2, rolloutModelOut}, Data: out.Logits},
			onnxmodel.MLPProbs:  {Shape: []int64{2, rolloutModelOut}, Data: out.Probs},
		},
	}}}
	for name, v := range map[string]any{"tg-model.json": spec, "selftest.json": st} {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(in, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	cpPub := filepath.Join(keys, "controlplane.pub")
	if err := os.WriteFile(cpPub, []byte(cpRecipientPEM), 0o600); err != nil {
		return nil, err
	}
	if _, err := runTgsp(ctx, tgspBin, "keygen", "--kind", "signer", "--out", p.signerKey); err != nil {
		return nil, err
	}
	if _, err := runTgsp(ctx, tgspBin, "keygen", "--kind", "recipient", "--out", p.benchRcpt); err != nil {
		return nil, err
	}
	if p.packS, err = runTgsp(ctx, tgspBin, "pack", "--signer-key", p.signerKey+".key", "--recipient", cpPub,
		"--recipient", p.benchRcpt+".pub", "--name", rolloutPkgName, "--version", rolloutPkgVersion, "--out", p.path, in); err != nil {
		return nil, err
	}
	fi, err := os.Stat(p.path)
	if err != nil {
		return nil, err
	}
	p.size = fi.Size()
	// The plaintext is not needed any more (the self-test outputs are in
	// the package).
	if err := os.RemoveAll(in); err != nil {
		return nil, err
	}
	return p, nil
}

// runTgsp runs the tgsp binary and returns its wall time in seconds.
func runTgsp(ctx context.Context, bin string, args ...string) (float64, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	t0 := time.Now()
	err := cmd.Run()
	d := time.Since(t0).Seconds()
	if err != nil {
		return 0, fmt.Errorf("tgsp %s: %v: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return d, nil
}

// deviceThroughput compares the agent's install path with the tgsp CLI on
// the rollout's package, measured one after the other on a quiet machine
// (after the rollout, with no server running), each the best of reps runs
// after a warm-up run that also fills the page cache.
type deviceThroughput struct {
	Reps int `json:"reps"`
	// The agent's code path (agent/internal/install: openVerified, then
	// load's readPlain of tg-model.json, the self-test and the model),
	// made of the same tgsp calls in this process: tgsp.Open and
	// Package.Verify with the default workers (GOMAXPROCS), then
	// Package.OpenFile read into memory, one file after the other on one
	// goroutine. The DEK comes from the bench recipient's stanza instead
	// of a key grant (the same X-Wing unwrap; the decryption after it is
	// identical).
	AgentVerifyS   float64 `json:"agent_verify_s"`
	AgentDecryptS  float64 `json:"agent_decrypt_s"`
	AgentVerifyMiB float64 `json:"agent_verify_mib_per_s"`
	AgentDecMiB    float64 `json:"agent_decrypt_mib_per_s"`
	AgentTotalMiB  float64 `json:"agent_verify_decrypt_mib_per_s"`
	// The baseline: the real tgsp binary, `tgsp verify` and `tgsp unpack`
	// (default workers, GOMAXPROCS; and --workers 1) to the page cache.
	TgspVerifyS     float64 `json:"tgsp_verify_s"`
	TgspUnpackS     float64 `json:"tgsp_unpack_s"`
	TgspUnpackW1S   float64 `json:"tgsp_unpack_w1_s"`
	TgspVerifyMiB   float64 `json:"tgsp_verify_mib_per_s"`
	TgspUnpackMiB   float64 `json:"tgsp_unpack_mib_per_s"`
	TgspUnpackW1MiB float64 `json:"tgsp_unpack_w1_mib_per_s"`
	TgspTotalMiB    float64 `json:"tgsp_verify_unpack_mib_per_s"`
	// Ratio is agent (verify + decrypt) over tgsp (verify + unpack)
	// throughput; DecryptRatioW1 compares the agent's one-goroutine
	// decryption with unpack --workers 1.
	Ratio          float64 `json:"ratio"`
	DecryptRatioW1 float64 `json:"decrypt_ratio_w1"`
}

// measureDeviceThroughput times both paths reps times each (after a
// warm-up) and keeps the best.
func measureDeviceThroughput(ctx context.Context, tgspBin, work string, p *rolloutPackage, reps int) (deviceThroughput, error) {
	r := deviceThroughput{Reps: reps}
	signer, err := tgsp.LoadSignerPublicKey(p.signerKey + ".pub")
	if err != nil {
		return r, err
	}
	rcpt, err := tgsp.LoadRecipientPrivateKey(p.benchRcpt + ".key")
	if err != nil {
		return r, err
	}
	out := filepath.Join(work, "unpacked")
	best := func(cur *float64, v float64) {
		if *cur == 0 || v < *cur {
			*cur = v
		}
	}
	// As tgspbench does: nothing is dirty in the page cache when a timed
	// run starts (the previous output is deleted and the file system
	// synced, untimed), so no run pays for another's writeback.
	for i := 0; i <= reps; i++ {
		syscall.Sync()
		v, d, err := agentInstallPath(ctx, p.path, signer, rcpt)
		if err != nil {
			return r, fmt.Errorf("agent path: %w", err)
		}
		syscall.Sync()
		tv, err := runTgsp(ctx, tgspBin, "verify", "--trust", p.signerKey+".pub", p.path)
		if err != nil {
			return r, err
		}
		var tu [2]float64
		for j, w := range []string{"0", "1"} {
			args := []string{"unpack", "--trust", p.signerKey + ".pub", "--recipient-key", p.benchRcpt + ".key", "--out", out}
			if w != "0" {
				args = append(args, "--workers", w)
			}
			syscall.Sync()
			if tu[j], err = runTgsp(ctx, tgspBin, append(args, p.path)...); err != nil {
				return r, err
			}
			if err := os.RemoveAll(out); err != nil {
				return r, err
			}
		}
		if i == 0 {
			continue // warm-up
		}
		best(&r.AgentVerifyS, v)
		best(&r.AgentDecryptS, d)
		best(&r.TgspVerifyS, tv)
		best(&r.TgspUnpackS, tu[0])
		best(&r.TgspUnpackW1S, tu[1])
	}
	mib := float64(p.size) / (1 << 20)
	per := func(s float64) float64 {
		if s <= 0 {
			return 0
		}
		return mib / s
	}
	r.AgentVerifyMiB, r.AgentDecMiB = per(r.AgentVerifyS), per(r.AgentDecryptS)
	r.AgentTotalMiB = per(r.AgentVerifyS + r.AgentDecryptS)
	r.TgspVerifyMiB, r.TgspUnpackMiB, r.TgspUnpackW1MiB = per(r.TgspVerifyS), per(r.TgspUnpackS), per(r.TgspUnpackW1S)
	r.TgspTotalMiB = per(r.TgspVerifyS + r.TgspUnpackS)
	if r.TgspTotalMiB > 0 {
		r.Ratio = r.AgentTotalMiB / r.TgspTotalMiB
	}
	if r.TgspUnpackW1MiB > 0 {
		r.DecryptRatioW1 = r.AgentDecMiB / r.TgspUnpackW1MiB
	}
	return r, nil
}

// agentInstallPath is what the agent does with a downloaded package between
// its verifying and self_test reports, minus the policy, the key grant
// request and the runtime: open and verify it completely, then decrypt the
// convention files and the model into memory, each proven whole by
// reading to io.EOF. It returns the verify and decrypt times in seconds.
func agentInstallPath(ctx context.Context, path string, trust *tgsp.SignerPublicKey, rcpt *tgsp.RecipientPrivateKey) (verifyS, decryptS float64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	pkg, err := tgsp.Open(f, fi.Size())
	if err == nil {
		err = pkg.Verify(ctx, []*tgsp.SignerPublicKey{trust}, time.Now(), 0)
	}
	if err != nil {
		return 0, 0, err
	}
	verifyS = time.Since(t0).Seconds()
	dek, err := pkg.UnwrapDEK(rcpt)
	if err != nil {
		return 0, 0, err
	}
	t1 := time.Now()
	specBytes, err := readWhole(pkg, dek, "tg-model.json")
	if err != nil {
		return 0, 0, err
	}
	var spec modelSpec
	if err := json.Unmarshal(specBytes, &spec); err != nil {
		return 0, 0, fmt.Errorf("tg-model.json: %w", err)
	}
	for _, name := range []string{spec.SelfTest, spec.Model} {
		if _, err := readWhole(pkg, dek, name); err != nil {
			return 0, 0, err
		}
	}
	return verifyS, time.Since(t1).Seconds(), nil
}

// readWhole decrypts one file into a buffer of its size, as the agent's
// readPlain does.
func readWhole(pkg *tgsp.Package, dek *tgsp.DEK, path string) ([]byte, error) {
	i := pkg.Manifest.Lookup(path)
	if i < 0 {
		return nil, fmt.Errorf("%s is not in the package", path)
	}
	r, err := pkg.OpenFile(dek, path)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, pkg.Manifest.Files[i].Size)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("decrypt %s: %w", path, err)
	}
	var one [1]byte
	if n, err := io.ReadFull(r, one[:]); n != 0 || !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("decrypt %s: not proven whole: %v", path, err)
	}
	return buf, nil
}

// mibps formats a throughput.
func mibps(v float64) string { return strconv.FormatFloat(v, 'f', 0, 64) + " MiB/s" }
