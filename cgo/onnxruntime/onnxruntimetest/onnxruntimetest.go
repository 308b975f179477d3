// Package onnxruntimetest loads ONNX Runtime for tests of any package that
// runs models through cgo/onnxruntime.
//
// [Init] finds libonnxruntime the way the bridge does with no configured path
// ($TG_ONNXRUNTIME_LIB, else the repository's .cache/onnxruntime/<GOARCH>/)
// and initializes the process once. A missing library fails the test when
// CI=true, where every test must run, and skips it elsewhere; either way the
// message names the command that installs it. A library that is present but
// does not load always fails the test.
package onnxruntimetest

import (
	"errors"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime"
)

var (
	once    sync.Once
	libPath string
	initErr error
)

// Library returns the path of libonnxruntime, or ends the test (see the
// package doc) when there is none.
func Library(t testing.TB) string {
	t.Helper()
	p, err := onnxruntime.FindLibrary("")
	if err != nil {
		Missing(t, err.Error())
	}
	return p
}

// Init makes sure ONNX Runtime is initialized in this process and returns
// the library's path.
func Init(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		libPath, initErr = onnxruntime.FindLibrary("")
		if initErr == nil {
			initErr = onnxruntime.Init(libPath)
		}
	})
	if errors.Is(initErr, onnxruntime.ErrLibraryNotFound) {
		Missing(t, initErr.Error())
	}
	if initErr != nil {
		t.Fatalf("onnxruntime.Init(%q): %v", libPath, initErr)
	}
	return libPath
}

// Missing fails the test when CI=true and skips it otherwise, with msg and
// the command that installs libonnxruntime.
func Missing(t testing.TB, msg string) {
	t.Helper()
	msg = "libonnxruntime is needed: " + msg
	if !strings.Contains(msg, onnxruntime.FetchCommand) {
		msg += "; install it: " + onnxruntime.FetchCommand
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}
