package archtest

import (
	"fmt"
	"path"
	"sort"
	"strings"
)

// Rule names a single import rule; a Violation carries the rule it breaks.
type Rule string

// The import rules of DESIGN.md §2; the package doc explains each.
const (
	RuleTgspSelfContained Rule = "tgsp-self-contained"
	RuleComponents        Rule = "components-independent"
	RuleMultiComponent    Rule = "multi-component-only-in-integration"
	RuleIntegrationLeaf   Rule = "integration-not-imported"
	RuleCgoConfined       Rule = "cgo-only-under-cgo"
)

// components are the top-level folders that must not import each other.
var components = []string{"agent", "controlplane", "trainer"}

// composerDir is the one package allowed to import trainer/ from inside
// another component: the control plane's main mounts the trainer's API.
const (
	composerDir      = "controlplane/cmd/tg-controlplane"
	composerMayUse   = "trainer"
	integrationDir   = "integration"
	cgoDir           = "cgo"
	tgspDir          = "tgsp"
	cgoPseudoPackage = "C"
)

// File is one Go source file: its path relative to the module root (slash
// separated, e.g. "agent/internal/state/store.go") and its import paths.
type File struct {
	Path    string
	Imports []string
}

// Violation is one broken rule, pinned to the file that breaks it.
type Violation struct {
	Rule   Rule
	File   string
	Import string // empty for rules about a whole package
	Reason string
}

func (v Violation) String() string {
	if v.Import == "" {
		return fmt.Sprintf("%s: %s (rule %s)", v.File, v.Reason, v.Rule)
	}
	return fmt.Sprintf("%s: imports %q: %s (rule %s)", v.File, v.Import, v.Reason, v.Rule)
}

// Check applies every rule to files, which belong to the module modulePath,
// and returns the violations sorted by file, then import, then rule. An empty
// result means the tree obeys the rules.
func Check(modulePath string, files []File) []Violation {
	var out []Violation
	// Imported components per package directory, for the multi-component
	// rule: it is about what a package (with its tests) depends on, not about
	// one file.
	type pkgUse struct {
		firstFile string
		comps     map[string]string // component -> one import that reaches it
	}
	pkgs := map[string]*pkgUse{}

	for _, f := range files {
		dir := path.Dir(f.Path)
		top := topLevel(dir)
		for _, imp := range f.Imports {
			if imp == cgoPseudoPackage {
				if !within(dir, cgoDir) {
					out = append(out, Violation{RuleCgoConfined, f.Path, imp,
						`import "C" outside cgo/`})
				}
				continue
			}
			rel, ok := moduleRel(modulePath, imp)
			if !ok {
				continue // standard library or another module
			}
			impTop := topLevel(rel)

			if top == tgspDir && impTop != tgspDir {
				out = append(out, Violation{RuleTgspSelfContained, f.Path, imp,
					"tgsp/ may import only tgsp/... from this module"})
			}
			if isComponent(top) && isComponent(impTop) && impTop != top &&
				(dir != composerDir || impTop != composerMayUse) {
				out = append(out, Violation{RuleComponents, f.Path, imp,
					fmt.Sprintf("%s/ must not import %s/; share through internal/ or tgsp/", top, impTop)})
			}
			if impTop == integrationDir && top != integrationDir {
				out = append(out, Violation{RuleIntegrationLeaf, f.Path, imp,
					"only integration/ may import integration/..."})
			}
			if isComponent(impTop) {
				p := pkgs[dir]
				if p == nil {
					p = &pkgUse{firstFile: f.Path, comps: map[string]string{}}
					pkgs[dir] = p
				}
				if _, seen := p.comps[impTop]; !seen {
					p.comps[impTop] = imp
				}
			}
		}
	}

	for dir, p := range pkgs {
		top := topLevel(dir)
		// Inside a component the components rule is already stricter (and
		// carries the composer exception), so this rule covers the rest.
		if top == integrationDir || isComponent(top) || len(p.comps) < 2 {
			continue
		}
		names := make([]string, 0, len(p.comps))
		for c := range p.comps {
			names = append(names, c+"/")
		}
		sort.Strings(names)
		out = append(out, Violation{RuleMultiComponent, p.firstFile, "",
			fmt.Sprintf("package %s imports %s; only integration/ may drive several components",
				dir, strings.Join(names, ", "))})
	}

	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Import != b.Import {
			return a.Import < b.Import
		}
		return a.Rule < b.Rule
	})
	return out
}

// moduleRel returns imp relative to the module root ("" for the root
// package) and whether imp belongs to the module at all.
func moduleRel(modulePath, imp string) (string, bool) {
	if imp == modulePath {
		return "", true
	}
	rel, ok := strings.CutPrefix(imp, modulePath+"/")
	return rel, ok
}

// topLevel returns the first element of a slash-separated relative path, or
// "" for the module root.
func topLevel(rel string) string {
	if rel == "." || rel == "" {
		return ""
	}
	top, _, _ := strings.Cut(rel, "/")
	return top
}

// within reports whether the relative directory dir is root or below it.
func within(dir, root string) bool {
	return dir == root || strings.HasPrefix(dir, root+"/")
}

func isComponent(top string) bool {
	for _, c := range components {
		if top == c {
			return true
		}
	}
	return false
}
