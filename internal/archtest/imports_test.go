package archtest

import (
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const mod = "github.com/tensorguard/tensorguardflow"

// want is the part of a Violation a table row pins down.
type want struct {
	Rule   Rule
	File   string
	Import string
}

func wants(vs []Violation) []want {
	out := []want{}
	for _, v := range vs {
		out = append(out, want{v.Rule, v.File, v.Import})
	}
	return out
}

func TestCheck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		files []File
		want  []want
	}{
		{
			name: "allowed layering",
			files: []File{
				{"tgsp/tgsp.go", []string{"crypto/ed25519", mod + "/tgsp/internal/stream", "github.com/cloudflare/circl/sign/mldsa/mldsa65"}},
				{"tgsp/cmd/tgsp/main.go", []string{mod + "/tgsp"}},
				{"agent/agent.go", []string{mod + "/tgsp", mod + "/internal/wire", mod + "/agent/internal/state"}},
				{"agent/agent_test.go", []string{mod + "/agent/agenttest"}},
				{"controlplane/server.go", []string{mod + "/internal/wire", mod + "/controlplane/internal/store"}},
				{"controlplane/cmd/tg-controlplane/main.go", []string{mod + "/controlplane", mod + "/trainer", mod + "/trainer/api"}},
				{"controlplane/cmd/tg-controlplane/main_test.go", []string{mod + "/trainer/trainertest"}},
				{"trainer/trainer.go", []string{mod + "/tgsp", mod + "/internal/envelope"}},
				{"internal/wire/wire.go", []string{"encoding/json"}},
				{"internal/wire/wire_test.go", []string{mod + "/agent/agenttest"}}, // one component is fine
				{"integration/e2e_test.go", []string{mod + "/agent", mod + "/controlplane", mod + "/trainer/client", mod + "/integration/harness"}},
				{"integration/harness/harness.go", []string{mod + "/controlplane/controlplanetest"}},
				{"cgo/onnxrt/bridge.go", []string{"C", "unsafe"}},
				{"cgo/tensorrt/internal/x/x.go", []string{"C"}},
				{"hack/tool/main.go", []string{mod + "/tgsp"}},
				{"doc.go", nil},
			},
			want: []want{},
		},
		{
			name:  "tgsp imports internal",
			files: []File{{"tgsp/manifest.go", []string{mod + "/internal/envelope"}}},
			want:  []want{{RuleTgspSelfContained, "tgsp/manifest.go", mod + "/internal/envelope"}},
		},
		{
			name:  "tgsp cmd imports agent",
			files: []File{{"tgsp/cmd/tgsp/main.go", []string{mod + "/agent"}}},
			want:  []want{{RuleTgspSelfContained, "tgsp/cmd/tgsp/main.go", mod + "/agent"}},
		},
		{
			name:  "tgsp test imports module root",
			files: []File{{"tgsp/x_test.go", []string{mod}}},
			want:  []want{{RuleTgspSelfContained, "tgsp/x_test.go", mod}},
		},
		{
			name:  "tgsp-like prefix is not tgsp",
			files: []File{{"tgsp/a.go", []string{mod + "/tgspx"}}},
			want:  []want{{RuleTgspSelfContained, "tgsp/a.go", mod + "/tgspx"}},
		},
		{
			name:  "agent imports controlplane",
			files: []File{{"agent/internal/enroll/enroll.go", []string{mod + "/controlplane/api"}}},
			want:  []want{{RuleComponents, "agent/internal/enroll/enroll.go", mod + "/controlplane/api"}},
		},
		{
			name:  "agent test imports controlplane fake",
			files: []File{{"agent/agent_test.go", []string{mod + "/controlplane/controlplanetest"}}},
			want:  []want{{RuleComponents, "agent/agent_test.go", mod + "/controlplane/controlplanetest"}},
		},
		{
			name:  "trainer imports agent",
			files: []File{{"trainer/export.go", []string{mod + "/agent"}}},
			want:  []want{{RuleComponents, "trainer/export.go", mod + "/agent"}},
		},
		{
			name:  "controlplane library imports trainer",
			files: []File{{"controlplane/server.go", []string{mod + "/trainer"}}},
			want:  []want{{RuleComponents, "controlplane/server.go", mod + "/trainer"}},
		},
		{
			name:  "tgctl may not import trainer",
			files: []File{{"controlplane/cmd/tgctl/main.go", []string{mod + "/trainer/client"}}},
			want:  []want{{RuleComponents, "controlplane/cmd/tgctl/main.go", mod + "/trainer/client"}},
		},
		{
			name:  "subpackage of the composer gets no exception",
			files: []File{{"controlplane/cmd/tg-controlplane/wiring/w.go", []string{mod + "/trainer"}}},
			want:  []want{{RuleComponents, "controlplane/cmd/tg-controlplane/wiring/w.go", mod + "/trainer"}},
		},
		{
			name:  "composer may not import agent",
			files: []File{{"controlplane/cmd/tg-controlplane/main.go", []string{mod + "/trainer", mod + "/agent"}}},
			want:  []want{{RuleComponents, "controlplane/cmd/tg-controlplane/main.go", mod + "/agent"}},
		},
		{
			name: "internal package drives two components across files",
			files: []File{
				{"internal/glue/a.go", []string{mod + "/agent"}},
				{"internal/glue/b_test.go", []string{mod + "/trainer/client"}},
			},
			want: []want{{RuleMultiComponent, "internal/glue/a.go", ""}},
		},
		{
			name:  "hack tool drives three components",
			files: []File{{"hack/demo/main.go", []string{mod + "/agent", mod + "/controlplane", mod + "/trainer"}}},
			want:  []want{{RuleMultiComponent, "hack/demo/main.go", ""}},
		},
		{
			name:  "module root package drives two components",
			files: []File{{"root.go", []string{mod + "/agent", mod + "/controlplane"}}},
			want:  []want{{RuleMultiComponent, "root.go", ""}},
		},
		{
			name:  "agent imports integration",
			files: []File{{"agent/agent_test.go", []string{mod + "/integration/harness"}}},
			want:  []want{{RuleIntegrationLeaf, "agent/agent_test.go", mod + "/integration/harness"}},
		},
		{
			name:  "internal imports integration",
			files: []File{{"internal/x/x.go", []string{mod + "/integration"}}},
			want:  []want{{RuleIntegrationLeaf, "internal/x/x.go", mod + "/integration"}},
		},
		{
			name:  "tgsp imports integration breaks two rules",
			files: []File{{"tgsp/t_test.go", []string{mod + "/integration/harness"}}},
			want: []want{
				{RuleIntegrationLeaf, "tgsp/t_test.go", mod + "/integration/harness"},
				{RuleTgspSelfContained, "tgsp/t_test.go", mod + "/integration/harness"},
			},
		},
		{
			name:  "cgo in agent",
			files: []File{{"agent/internal/runtime/ort.go", []string{"C", "unsafe"}}},
			want:  []want{{RuleCgoConfined, "agent/internal/runtime/ort.go", "C"}},
		},
		{
			name:  "cgo in a cgo-like folder",
			files: []File{{"cgox/x.go", []string{"C"}}},
			want:  []want{{RuleCgoConfined, "cgox/x.go", "C"}},
		},
		{
			name:  "cgo at the module root",
			files: []File{{"root.go", []string{"C"}}},
			want:  []want{{RuleCgoConfined, "root.go", "C"}},
		},
		{
			name:  "cgo in tgsp",
			files: []File{{"tgsp/fast.go", []string{"C"}}},
			want:  []want{{RuleCgoConfined, "tgsp/fast.go", "C"}},
		},
		{
			name: "other modules with a shared prefix are not ours",
			files: []File{
				{"tgsp/a.go", []string{mod + "-extra/agent", "github.com/tensorguard/other"}},
				{"agent/a.go", []string{mod + "x/controlplane"}},
			},
			want: []want{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Check(mod, tt.files)
			if !reflect.DeepEqual(wants(got), tt.want) {
				t.Errorf("Check() violations:\n got  %+v\n want %+v\n(%v)", wants(got), tt.want, got)
			}
		})
	}
}

func TestModulePath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, content, want string
		wantErr             bool
	}{
		{"plain", "module example.com/m\n\ngo 1.26\n", "example.com/m", false},
		{"comment and quotes", "// header\nmodule \"example.com/q\" // trailing\n", "example.com/q", false},
		{"modules prefix is not the directive", "modulex foo\nmodule example.com/r\n", "example.com/r", false},
		{"missing", "go 1.26\n", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := filepath.Join(t.TempDir(), "go.mod")
			if err := os.WriteFile(p, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := ModulePath(p)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ModulePath() = %q, %v; want %q, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestScan shows that the walk reads test files and cgo files, and skips
// what the go command skips, on a synthetic tree.
func TestScan(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	write := func(rel, content string) {
		t.Helper()
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module "+mod+"\n")
	write("tgsp/tgsp.go", "package tgsp\n")
	write("tgsp/tgsp_test.go", "package tgsp_test\nimport (\n\t\"testing\"\n\tx \""+mod+"/agent\"\n)\n")
	write("agent/ort_arm64.go", "//go:build arm64\n\npackage agent\n\n// #include <stdlib.h>\nimport \"C\"\n")
	write("agent/body_broken.go", "package agent\nimport \"fmt\"\nfunc {{{ not go\n") // only imports are parsed
	write("agent/testdata/bad.go", "package bad\nimport \"C\"\n")
	write("agent/.hidden/h.go", "package h\nimport \"C\"\n")
	write("agent/_old/o.go", "package o\nimport \"C\"\n")
	write("vendor/v/v.go", "package v\nimport \"C\"\n")
	write("tools/go.mod", "module example.com/tools\n")
	write("tools/t.go", "package tools\nimport \"C\"\n")
	write("README.md", "not go\n")

	files, err := Scan(root)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]string{}
	for _, f := range files {
		got[f.Path] = f.Imports
	}
	wantFiles := map[string][]string{
		"tgsp/tgsp.go":         nil,
		"tgsp/tgsp_test.go":    {"testing", mod + "/agent"},
		"agent/ort_arm64.go":   {"C"},
		"agent/body_broken.go": {"fmt"},
	}
	if !reflect.DeepEqual(got, wantFiles) {
		t.Fatalf("Scan() = %v, want %v", got, wantFiles)
	}
	vs := Check(mod, files)
	wantV := []want{
		{RuleCgoConfined, "agent/ort_arm64.go", "C"},
		{RuleTgspSelfContained, "tgsp/tgsp_test.go", mod + "/agent"},
	}
	if !reflect.DeepEqual(wants(vs), wantV) {
		t.Errorf("Check(Scan()) = %+v, want %+v", wants(vs), wantV)
	}
}

func TestScanReportsUnparsableImports(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "x.go"), []byte("package x\nimport (\n\"fmt\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Scan(root); err == nil {
		t.Fatal("Scan() of a file with a broken import block: want an error, got nil")
	}
}

// TestModuleImportRules checks the real tree. It must pass on every commit.
func TestModuleImportRules(t *testing.T) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		t.Fatalf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("go env GOMOD = %q: not inside the module", gomod)
	}
	modulePath, err := ModulePath(gomod)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Dir(gomod)
	files, err := Scan(root)
	if err != nil {
		t.Fatal(err)
	}

	// The walk must have seen this very file; otherwise it checked nothing.
	perTop := map[string]int{}
	seenSelf := false
	for _, f := range files {
		perTop[topLevel(path.Dir(f.Path))]++
		if f.Path == "internal/archtest/imports_test.go" {
			seenSelf = true
		}
	}
	if !seenSelf {
		t.Fatalf("Scan(%s) did not find internal/archtest/imports_test.go among %d files", root, len(files))
	}
	t.Logf("module %s: %d Go files checked, per top-level folder: %v", modulePath, len(files), perTop)

	for _, v := range Check(modulePath, files) {
		t.Error(v)
	}
}
