package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"math"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/tensorguard/tensorguardflow/tgsp"
	"github.com/tensorguard/tensorguardflow/trainer"
	tinker "github.com/tensorguard/tensorguardflow/trainer/client"
	"github.com/tensorguard/tensorguardflow/trainer/models"
	"github.com/tensorguard/tensorguardflow/trainer/trainertest"
)

// startTrainer serves TG-Tinker over SQLite in t.TempDir with the test
// Host, which knows the API key "key-a" of tenant acme.
func startTrainer(t *testing.T) (*httptest.Server, *trainertest.Host) {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "cp.db")+"?_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	host := trainertest.NewHost()
	host.AddKey("key-a", "acme", "key-a-id", true)
	tr, err := trainer.New(context.Background(), trainer.Config{DB: db, Backend: "sqlite", Host: host,
		Models: models.Default(), Workers: 1, Lease: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(tr.Handler())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("trainer run: %v", err)
		}
		srv.Close()
	})
	return srv, host
}

func TestRun(t *testing.T) {
	srv, host := startTrainer(t)
	t.Setenv(tinker.EnvAPIKey, "key-a")
	for _, tc := range []struct {
		name     string
		steps    int
		epsilon  float64
		wantErr  string // empty: success
		wantText []string
	}{
		{name: "trains and exports", steps: 3, epsilon: 8,
			wantText: []string{"privacy spent (GET …/privacy)", "greedy sample:", "exported edge-lm@1.0.0"}},
		// One step at q=0.5, σ=1 costs more than ε=1: refused, and said so.
		{name: "past the budget", steps: 2, epsilon: 1, wantErr: "DP_BUDGET_EXCEEDED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o := options{server: srv.URL, model: "tg-bigram", name: "edge-lm", version: "1.0.0",
				steps: tc.steps, copies: 4, noise: 1, sampleRate: 0.5, epsilon: tc.epsilon, delta: 1e-5,
				learningRate: 0.2, out: filepath.Join(dir, "edge-lm.tgsp"), summary: filepath.Join(dir, "summary.json")}
			var out bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			err := run(ctx, o, &out)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("run: %v, want an error with %s\n%s", err, tc.wantErr, out.String())
				}
				if _, err := os.Stat(o.out); !os.IsNotExist(err) {
					t.Errorf("a package was written after a failure: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			for _, s := range tc.wantText {
				if !strings.Contains(out.String(), s) {
					t.Errorf("output lacks %q:\n%s", s, out.String())
				}
			}
			var sum summary
			b, err := os.ReadFile(o.summary)
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b, &sum); err != nil {
				t.Fatal(err)
			}
			if sum.Privacy.Steps != int64(tc.steps) || sum.Privacy.Epsilon <= 0 || sum.Privacy.Epsilon > tc.epsilon {
				t.Errorf("summary privacy %+v", sum.Privacy)
			}
			// The file is the tenant's signed package, and its dp_cert.json
			// states the ε the trainer's ledger reports.
			f, err := os.Open(o.out)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			st, _ := f.Stat()
			pkg, err := tgsp.Open(f, st.Size())
			if err != nil {
				t.Fatal(err)
			}
			signer, _, err := host.PackageKeys("acme")
			if err != nil {
				t.Fatal(err)
			}
			if err := pkg.Verify(ctx, []*tgsp.SignerPublicKey{signer}, time.Now(), 1); err != nil {
				t.Fatalf("verify the package: %v", err)
			}
			cert, err := tgsp.ParseDPCert(pkg.DPCertJSON)
			if err != nil {
				t.Fatal(err)
			}
			if math.Abs(cert.Epsilon-sum.Privacy.Epsilon) > 1e-9 || cert.Steps != sum.Privacy.Steps {
				t.Errorf("dp_cert %+v, the trainer's privacy %+v", cert, sum.Privacy)
			}
		})
	}
}
