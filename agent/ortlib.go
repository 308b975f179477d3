package agent

import (
	"os"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime"
)

// PackagedONNXRuntimeLibrary is where the tg-agent .deb installs the
// libonnxruntime it was tested with (packaging/README.md).
const PackagedONNXRuntimeLibrary = "/usr/lib/tensorguard/libonnxruntime.so.1"

// onnxRuntimeLibrary is the library path handed to the ONNX Runtime bridge:
// install.onnxruntime_library when set; else, when $TG_ONNXRUNTIME_LIB is
// unset and the packaged library is present, the packaged one; else ""
// (the bridge's own search: $TG_ONNXRUNTIME_LIB, then the development
// cache). An explicit setting always wins over the package.
func onnxRuntimeLibrary(configured string, getenv func(string) string, exists func(string) bool) string {
	if configured != "" || getenv(onnxruntime.EnvLibrary) != "" {
		return configured
	}
	if exists(PackagedONNXRuntimeLibrary) {
		return PackagedONNXRuntimeLibrary
	}
	return ""
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
