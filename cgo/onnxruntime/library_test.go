package onnxruntime_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime"
)

func TestFindLibrary(t *testing.T) {
	// Not parallel: it changes the working directory and the environment.
	root := t.TempDir()
	touch := func(p string) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	repo := filepath.Join(root, "repo")
	touch(filepath.Join(repo, "go.mod"))
	deep := filepath.Join(repo, "a", "b")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	configured := touch(filepath.Join(root, "etc", "libonnxruntime.so.1"))
	fromEnv := touch(filepath.Join(root, "env", "libonnxruntime.so.1"))
	missing := filepath.Join(root, "missing.so")
	installed := touch(filepath.Join(root, "usr", "lib", "tensorguard", "libonnxruntime.so.1"))
	cached := filepath.Join(repo, ".cache", "onnxruntime", runtime.GOARCH, "libonnxruntime.so.1")

	tests := []struct {
		name       string
		configured string
		env        string
		cache      bool
		installed  bool
		dir        string
		want       string
		wantErr    string // substring; the error is also ErrLibraryNotFound
	}{
		{name: "configured wins", configured: configured, env: fromEnv, cache: true, dir: deep, want: configured},
		{name: "configured but missing", configured: missing, env: fromEnv, cache: true, dir: deep, wantErr: "configured path"},
		{name: "env", env: fromEnv, cache: true, dir: deep, want: fromEnv},
		{name: "env but missing", env: missing, cache: true, dir: deep, wantErr: "$" + onnxruntime.EnvLibrary},
		{name: "configured wins over installed", configured: configured, installed: true, cache: true, dir: deep, want: configured},
		{name: "env wins over installed", env: fromEnv, installed: true, cache: true, dir: deep, want: fromEnv},
		{name: "installed wins over the cache", installed: true, cache: true, dir: deep, want: installed},
		{name: "installed outside a module", installed: true, dir: root, want: installed},
		{name: "cache from a subfolder", cache: true, dir: deep, want: cached},
		{name: "cache from the root", cache: true, dir: repo, want: cached},
		{name: "no cache", dir: deep, wantErr: "hack/fetch-onnxruntime.sh"},
		{name: "outside a module", dir: root, wantErr: "no go.mod"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(onnxruntime.EnvLibrary, tt.env)
			where := missing
			if tt.installed {
				where = installed
			}
			t.Cleanup(onnxruntime.SetInstalledLibrary(where))
			t.Chdir(tt.dir)
			os.Remove(cached)
			if tt.cache {
				touch(cached)
			}
			got, err := onnxruntime.FindLibrary(tt.configured)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("FindLibrary = %q, %v; want %q", got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("FindLibrary = %q, want an error", got)
			}
			if !errors.Is(err, onnxruntime.ErrLibraryNotFound) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("FindLibrary error %q: want ErrLibraryNotFound mentioning %q", err, tt.wantErr)
			}
			if tt.configured == missing && !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("FindLibrary error %q does not wrap fs.ErrNotExist", err)
			}
		})
	}
}
