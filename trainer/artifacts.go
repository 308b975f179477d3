package trainer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing/fstest"
	"time"

	"github.com/tensorguard/tensorguardflow/tgsp"
	"github.com/tensorguard/tensorguardflow/trainer/client"
	"github.com/tensorguard/tensorguardflow/trainer/internal/jobs"
)

// aad binds a sealed value to its kind, tenant and id, so an envelope moved
// to another row, tenant or purpose does not open.
func aad(kind, tenant, id string) []byte {
	return []byte("tg-tinker/v1\x00" + kind + "\x00" + tenant + "\x00" + id)
}

func (t *Trainer) seal(ctx context.Context, tenant, kind, id string, plaintext []byte) ([]byte, error) {
	return t.cfg.Host.Seal(ctx, tenant, plaintext, aad(kind, tenant, id))
}

func (t *Trainer) open(ctx context.Context, tenant, kind, id string, envelope []byte) ([]byte, error) {
	b, err := t.cfg.Host.Open(ctx, tenant, envelope, aad(kind, tenant, id))
	if err != nil {
		return nil, fmt.Errorf("open sealed %s %s: %w", kind, id, err)
	}
	return b, nil
}

func (t *Trainer) sealJSON(ctx context.Context, tenant, kind, id string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return t.seal(ctx, tenant, kind, id, b)
}

// artifact seals content as a new artifact of client c.
func (t *Trainer) artifact(ctx context.Context, c jobs.Client, kind, name string, content []byte) (*jobs.Artifact, error) {
	a := &jobs.Artifact{ID: jobs.NewID("art"), Tenant: c.Tenant, ClientID: c.ID, Kind: kind, Name: name,
		Size: int64(len(content)), CreatedAt: t.cfg.Now().UTC()}
	blob, err := t.seal(ctx, c.Tenant, "artifact", a.ID, content)
	if err != nil {
		return nil, err
	}
	a.Blob = blob
	return a, nil
}

// loadCheckpoint opens a tinker://<client>/<artifact> path of tenant.
func (t *Trainer) loadCheckpoint(ctx context.Context, tenant, path string) (checkpoint, error) {
	rest, ok := strings.CutPrefix(path, "tinker://")
	_, id, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || id == "" {
		return checkpoint{}, failf("INVALID_ARGUMENT", "path %q is not tinker://<client>/<checkpoint>", path)
	}
	a, err := t.store.GetArtifact(ctx, tenant, id)
	if errors.Is(err, jobs.ErrNotFound) || (err == nil && a.Kind != "checkpoint") {
		return checkpoint{}, failf("NOT_FOUND", "no checkpoint %s", path)
	}
	if err != nil {
		return checkpoint{}, err
	}
	raw, err := t.open(ctx, tenant, "artifact", a.ID, a.Blob)
	if err != nil {
		return checkpoint{}, err
	}
	var cp checkpoint
	if err := json.Unmarshal(raw, &cp); err != nil {
		return checkpoint{}, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	return cp, nil
}

// export packs the client's merged model as a TGSP package: the ONNX model
// and its convention files from the session, dp_cert.json with the privacy
// spent, evidence.json with the base model, the salted digest of the data
// sent and the head of the tenant's audit chain; signed by the tenant's
// trainer key and packed to the control plane's package key. The package
// is built in memory (the plaintext model is never written anywhere) and
// kept as a sealed artifact.
func (t *Trainer) export(ctx context.Context, c jobs.Client, cfg client.TrainingClientConfig, led ledger, l *live,
	r client.ExportRequest, actor string) (client.ExportResult, *jobs.Artifact, error) {
	if _, err := tgsp.ParseVersion(r.Version); err != nil || r.Name == "" {
		return client.ExportResult{}, nil, failf("INVALID_ARGUMENT", "export needs a package name and a SemVer version (%q, %q)", r.Name, r.Version)
	}
	ex, err := l.s.Export()
	if err != nil {
		return client.ExportResult{}, nil, err
	}
	signer, recipients, err := t.cfg.Host.ExportKeys(ctx, c.Tenant)
	if err != nil {
		return client.ExportResult{}, nil, err
	}
	now := t.cfg.Now().UTC()
	var dpCert []byte
	if cfg.DP.Enabled {
		eps, err := led.epsilon(cfg.DP)
		if err != nil {
			return client.ExportResult{}, nil, err
		}
		// The declared dataset size, else the largest pool of examples
		// one step sampled from.
		ds := int64(cfg.DP.DatasetSize)
		if ds == 0 {
			ds = l.pool
		}
		if ds == 0 {
			return client.ExportResult{}, nil, failf("INVALID_ARGUMENT", "nothing was trained: no dp_cert to issue")
		}
		dpCert, err = json.Marshal(tgsp.DPCert{
			Schema: tgsp.DPCertSchema, Epsilon: eps, Delta: cfg.DP.TargetDelta, Accountant: cfg.DP.Accountant,
			NoiseMultiplier: cfg.DP.NoiseMultiplier, ClippingNorm: cfg.DP.MaxGradNorm, SamplingRate: cfg.DP.SampleRate,
			Steps: led.steps(), DatasetSize: ds, Sampling: "poisson", TrainingRun: c.ID, IssuedAt: now.Format(time.RFC3339),
		})
		if err != nil {
			return client.ExportResult{}, nil, err
		}
	}
	// The audit head as of now: the export's own entry follows it.
	head, err := t.cfg.Host.Audit(ctx, c.Tenant, actor, "trainer.export.begin", c.ID, map[string]any{"package": r.Name + "@" + r.Version})
	if err != nil {
		return client.ExportResult{}, nil, err
	}
	evidence, err := json.Marshal(tgsp.Evidence{
		Schema:    tgsp.EvidenceSchema,
		BaseModel: cfg.BaseModel + "@sha256:" + l.s.BaseSHA256(),
		Trainer:   "tg-tinker",
		Datasets:  []tgsp.EvidenceDataset{{Name: "training-client:" + c.ID}},
		Claims: map[string]any{
			"training_client":   c.ID,
			"base_model_sha256": l.s.BaseSHA256(),
			// Salted with a random secret kept in the sealed client state: it
			// commits to the data without letting anyone test a guess of it.
			"dataset_digest":   "salted-sha256:" + digestHex(l.data),
			"audit_chain_head": head,
			"steps":            c.Steps,
			"lora_rank":        cfg.LoRA.Rank,
			"dp":               cfg.DP.Enabled,
		},
	})
	if err != nil {
		return client.ExportResult{}, nil, err
	}
	mem := fstest.MapFS{}
	for p, b := range ex.Files {
		mem[p] = &fstest.MapFile{Data: b, Mode: 0o644}
	}
	var pkg bytes.Buffer
	if _, err := tgsp.PackFS(&pkg, fs.FS(mem), tgsp.PackOptions{Name: r.Name, Version: r.Version, CreatedAt: now,
		Evidence: evidence, DPCert: dpCert, Signer: signer, Recipients: recipients}); err != nil {
		return client.ExportResult{}, nil, failf("INVALID_ARGUMENT", "pack: %v", err)
	}
	a, err := t.artifact(ctx, c, "package", r.Name+"@"+r.Version, pkg.Bytes())
	if err != nil {
		return client.ExportResult{}, nil, err
	}
	sum := sha256.Sum256(pkg.Bytes()) // of the package: ciphertext and signed metadata
	return client.ExportResult{ArtifactID: a.ID, Name: r.Name, Version: r.Version, SHA256: hex.EncodeToString(sum[:]),
		Size: int64(pkg.Len()), DPCert: dpCert}, a, nil
}
