package agent

import (
	"testing"

	"github.com/tensorguard/tensorguardflow/cgo/onnxruntime"
)

func TestONNXRuntimeLibraryPrecedence(t *testing.T) {
	t.Parallel()
	const mine = "/opt/ort/libonnxruntime.so.1"
	tests := []struct {
		name       string
		configured string
		env        string
		packaged   bool
		want       string
	}{
		{"configured wins over the package", mine, "", true, mine},
		{"configured wins over the environment", mine, "/env/lib.so", true, mine},
		{"environment wins over the package", "", "/env/lib.so", true, ""},
		{"packaged when present", "", "", true, PackagedONNXRuntimeLibrary},
		{"bridge's search without a package", "", "", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := func(k string) string {
				if k == onnxruntime.EnvLibrary {
					return tt.env
				}
				return ""
			}
			exists := func(p string) bool { return tt.packaged && p == PackagedONNXRuntimeLibrary }
			if got := onnxRuntimeLibrary(tt.configured, getenv, exists); got != tt.want {
				t.Errorf("onnxRuntimeLibrary(%q) = %q, want %q", tt.configured, got, tt.want)
			}
		})
	}
}
