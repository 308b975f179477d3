package lm

import (
	"os"
	"testing"

	"github.com/gomlx/gomlx/backends"

	"github.com/tensorguard/tensorguardflow/trainer/internal/dpsgd"
)

func TestMain(m *testing.M) {
	if _, ok := os.LookupEnv(dpsgd.BackendEnv); !ok {
		os.Setenv(dpsgd.BackendEnv, dpsgd.DefaultBackendConfig)
	}
	os.Exit(m.Run())
}

type backendT = backends.Backend

func testBackend(t testing.TB) backends.Backend {
	t.Helper()
	b, err := dpsgd.SharedBackend()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
