package onnxruntime_test

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxmodel"
	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime/onnxruntimetest"
)

// shimSource is a stand-in libonnxruntime: its OrtGetApiBase reports the
// version FAKE_VERSION and either forwards GetApi to the real library named
// by $TG_ORT_SHIM_REAL (a "newer" ONNX Runtime that still offers API 24) or,
// without REAL, offers no API at all (an "older" one).
const shimSource = `
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
	const void *(*GetApi)(uint32_t version);
	const char *(*GetVersionString)(void);
} ApiBase;

static const ApiBase *real_base;

static const void *get_api(uint32_t version) {
#ifdef REAL
	return real_base->GetApi(version);
#else
	(void)version;
	return NULL;
#endif
}

static const char *get_version(void) { return FAKE_VERSION; }

static const ApiBase base = {get_api, get_version};

const ApiBase *OrtGetApiBase(void) {
#ifdef REAL
	if (!real_base) {
		const char *path = getenv("TG_ORT_SHIM_REAL");
		void *h = path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
		const ApiBase *(*f)(void) = h ? (const ApiBase *(*)(void))dlsym(h, "OrtGetApiBase") : NULL;
		if (!f) {
			fprintf(stderr, "shim: cannot load the real library from $TG_ORT_SHIM_REAL\n");
			abort();
		}
		real_base = f();
	}
#endif
	return &base;
}
`

// buildShim compiles shimSource into dir with the C compiler cgo uses.
func buildShim(t *testing.T, dir, name string, defines ...string) string {
	t.Helper()
	src := filepath.Join(dir, "shim.c")
	if err := os.WriteFile(src, []byte(shimSource), 0o644); err != nil {
		t.Fatal(err)
	}
	cc := "gcc"
	if out, err := exec.Command("go", "env", "CC").Output(); err == nil && strings.TrimSpace(string(out)) != "" {
		cc = strings.TrimSpace(string(out))
	}
	out := filepath.Join(dir, name)
	args := append([]string{"-shared", "-fPIC", "-o", out, src, "-ldl"}, defines...)
	if b, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", cc, strings.Join(args, " "), err, b)
	}
	return out
}

const (
	envChild   = "TG_ORT_INIT_CHILD"
	envLib     = "TG_ORT_INIT_LIB"
	envNewer   = "TG_ORT_INIT_NEWER"
	envOlder   = "TG_ORT_INIT_OLDER"
	envShimLib = "TG_ORT_SHIM_REAL"
)

// TestInit checks Init's refusals and its once-per-process rule. Init
// changes process-wide state that cannot be undone once it succeeds, so the
// checks run in a child process of this test binary (this same test, with
// envChild set), which starts with nothing loaded.
func TestInit(t *testing.T) {
	if os.Getenv(envChild) == "1" {
		initChild(t)
		return
	}
	t.Parallel()
	lib := onnxruntimetest.Library(t)
	dir := t.TempDir()
	newer := buildShim(t, dir, "libnewer.so", `-DFAKE_VERSION="1.25.0"`, "-DREAL")
	older := buildShim(t, dir, "libolder.so", `-DFAKE_VERSION="1.23.2"`)
	cmd := exec.Command(os.Args[0], "-test.run=^TestInit$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(),
		envChild+"=1", envLib+"="+lib, envNewer+"="+newer, envOlder+"="+older, envShimLib+"="+lib)
	out, err := cmd.CombinedOutput()
	t.Logf("child process:\n%s", out)
	if err != nil {
		t.Fatalf("child process: %v", err)
	}
	if !strings.Contains(string(out), "--- PASS: TestInit") {
		t.Fatal("the child process did not run TestInit")
	}
}

func initChild(t *testing.T) {
	lib, newer, older := os.Getenv(envLib), os.Getenv(envNewer), os.Getenv(envOlder)
	model, err := testMLP.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if v := onnxruntime.Version(); v != "" {
		t.Fatalf("Version before Init = %q", v)
	}
	if _, err := onnxruntime.NewSession(model, onnxruntime.Options{}); !errors.Is(err, onnxruntime.ErrNotInitialized) {
		t.Fatalf("NewSession before Init = %v, want ErrNotInitialized", err)
	}
	notLib := filepath.Join(t.TempDir(), "libonnxruntime.so.1")
	if err := os.WriteFile(notLib, []byte("not an ELF file"), 0o644); err != nil {
		t.Fatal(err)
	}
	refusals := []struct {
		name, path string
		is         error  // errors.Is, when set
		contains   string // in the message
	}{
		{"empty path", "", onnxruntime.ErrLibraryNotFound, "empty library path"},
		{"missing file", filepath.Join(t.TempDir(), "nope.so"), fs.ErrNotExist, "nope.so"},
		{"not a library", notLib, nil, "1.24.x"},
		{"older library without API 24", older, nil, "1.24.x"},
		{"newer library", newer, onnxruntime.ErrUnsupportedVersion, `"1.25.0"`},
	}
	for _, r := range refusals {
		err := onnxruntime.Init(r.path)
		t.Logf("%s: %v", r.name, err)
		switch {
		case err == nil:
			t.Fatalf("%s: Init(%q) succeeded", r.name, r.path)
		case r.is != nil && !errors.Is(err, r.is):
			t.Errorf("%s: Init = %v, want %v", r.name, err, r.is)
		case !strings.Contains(err.Error(), r.contains):
			t.Errorf("%s: Init = %v, want it to mention %s", r.name, err, r.contains)
		}
		if v := onnxruntime.Version(); v != "" {
			t.Fatalf("%s: Version after a refused Init = %q", r.name, v)
		}
	}
	// Every refusal left the process clean: the real library loads now.
	if err := onnxruntime.Init(lib); err != nil {
		t.Fatalf("Init(%q) after the refusals: %v", lib, err)
	}
	if v := onnxruntime.Version(); v != onnxruntime.LibraryVersion {
		t.Errorf("Version = %q, want %q", v, onnxruntime.LibraryVersion)
	}
	if err := onnxruntime.Init(lib); err != nil {
		t.Errorf("second Init with the same path: %v", err)
	}
	if err := onnxruntime.Init(newer); err == nil || !strings.Contains(err.Error(), "already initialized") {
		t.Errorf("Init with another path after success = %v, want an already-initialized error", err)
	}
	s, err := onnxruntime.NewSession(model, onnxruntime.Options{IntraOpThreads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	x := onnxmodel.RandomInputs(3*testMLP.In, 4)
	got, err := runMLP(s, x)
	if err == nil {
		err = checkMLP(x, got)
	}
	if err != nil {
		t.Fatal(err)
	}
}
