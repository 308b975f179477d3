package onnxruntime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
)

// Versions this package is built for.
const (
	// BindingVersion is the github.com/yalue/onnxruntime_go version in go.mod.
	BindingVersion = "v1.27.0"
	// LibraryVersion is the libonnxruntime release the bridge is tested with
	// (what hack/fetch-onnxruntime.sh installs). [Init] accepts any 1.24.x.
	LibraryVersion = "1.24.1"
)

// EnvLibrary names the environment variable that [FindLibrary] consults
// when no path is configured (tests and development use it).
const EnvLibrary = "TG_ONNXRUNTIME_LIB"

// LibraryFile is the library's file name, as onnxruntime-node ships it.
const LibraryFile = "libonnxruntime.so.1"

// FetchCommand is how a developer installs the library into the cache that
// [FindLibrary] looks in; error messages and tests name it.
const FetchCommand = "bash hack/fetch-onnxruntime.sh (or, as root, bash hack/install-deps.sh)"

// InstalledLibrary is where the tg-agent .deb installs the libonnxruntime
// the bridge is tested with (packaging/README.md).
const InstalledLibrary = "/usr/lib/tensorguard/" + LibraryFile

// installedLibrary is InstalledLibrary; tests point it elsewhere.
var installedLibrary = InstalledLibrary

// ErrLibraryNotFound is returned by [FindLibrary] when no library is
// configured, none is installed and none is in the development cache.
var ErrLibraryNotFound = errors.New("libonnxruntime not found")

// CachePath returns where hack/fetch-onnxruntime.sh puts the library for
// goarch, relative to the repository root.
func CachePath(goarch string) string {
	return filepath.Join(".cache", "onnxruntime", goarch, LibraryFile)
}

// FindLibrary returns the path of libonnxruntime to pass to [Init]:
//
//  1. configured, when not empty (the agent's config file sets it; a
//     configured path that does not exist is an error, never a fallback);
//  2. else $TG_ONNXRUNTIME_LIB, when set;
//  3. else [InstalledLibrary], when present (a packaged agent);
//  4. else the development cache, .cache/onnxruntime/<GOARCH>/libonnxruntime.so.1
//     in the nearest directory at or above the working directory that has a
//     go.mod, which is where hack/fetch-onnxruntime.sh puts it.
//
// It checks only that the file exists; [Init] checks what it is.
func FindLibrary(configured string) (string, error) {
	if configured != "" {
		return existing(configured, "configured")
	}
	if p := os.Getenv(EnvLibrary); p != "" {
		return existing(p, "$"+EnvLibrary)
	}
	if _, err := os.Stat(installedLibrary); err == nil {
		return installedLibrary, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("%w: no path configured, $%s unset, none installed, and no working directory: %v", ErrLibraryNotFound, EnvLibrary, err)
	}
	rel := CachePath(runtime.GOARCH)
	for dir := wd; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, rel)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
			return "", fmt.Errorf("%w: no path configured, $%s unset, none installed, and no %s; run %s",
				ErrLibraryNotFound, EnvLibrary, p, FetchCommand)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", fmt.Errorf("%w: no path configured, $%s unset, none installed, and no go.mod at or above %s to find %s in; run %s in the source tree",
		ErrLibraryNotFound, EnvLibrary, wd, rel, FetchCommand)
}

func existing(path, from string) (string, error) {
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("%w: %s path: %w", ErrLibraryNotFound, from, err)
	}
	return path, nil
}
