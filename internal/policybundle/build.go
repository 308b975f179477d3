package policybundle

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/loader/filter"
)

// The query the agent evaluates and the rule that decides.
const (
	// Query is what the agent evaluates for every install decision.
	Query = "data.tensorguard.install"
	// AllowRule must be defined by every bundle.
	AllowRule = "data.tensorguard.install.allow"
)

// Limits.
const (
	// MaxFiles bounds the policy and data files of a bundle.
	MaxFiles = 256
	// MaxFileSize bounds one file (a module or a data document).
	MaxFileSize = 1 << 20
	// MaxContentSize bounds the sum of a bundle's files, decompressed.
	MaxContentSize = 8 << 20
	// MaxBundleSize bounds a signed bundle as stored and sent (gzipped).
	MaxBundleSize = 4 << 20
)

// Built-ins a device policy may not call: they reach the network or reveal
// the agent's environment, and a policy decision must depend only on its
// input and the bundle.
var forbiddenBuiltins = []string{"http.send", "net.lookup_ip_addr", "opa.runtime"}

// Capabilities returns the OPA capabilities policies are compiled and
// evaluated with: this OPA's, less the built-ins with side effects.
func Capabilities() *ast.Capabilities {
	c := ast.CapabilitiesForThisVersion()
	c.Builtins = slices.DeleteFunc(c.Builtins, func(b *ast.Builtin) bool {
		return slices.Contains(forbiddenBuiltins, b.Name)
	})
	return c
}

// Files are the sources of a bundle: slash-separated relative path →
// content. Paths end in ".rego" (a module) or are data.json, data.yaml or
// data.yml (a data document, placed at the data path of its directory, as
// OPA does).
type Files map[string][]byte

// Names returns the paths in order.
func (f Files) Names() []string {
	names := make([]string, 0, len(f))
	for n := range f {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Problem is one thing wrong with a bundle's sources, placed in a file
// where possible.
type Problem struct {
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	Column  int    `json:"column,omitempty"`
	Code    string `json:"code,omitempty"` // OPA's error code, e.g. rego_parse_error
	Message string `json:"message"`
}

func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		if p.Line > 0 {
			fmt.Fprintf(&b, ":%d", p.Line)
			if p.Column > 0 {
				fmt.Fprintf(&b, ":%d", p.Column)
			}
		}
		b.WriteString(": ")
	}
	if p.Code != "" {
		b.WriteString(p.Code + ": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// BuildError is the error of Build: the sources are not a usable policy.
// Its message lists every problem, "file:line:col: code: message" each.
type BuildError struct {
	Problems []Problem
}

func (e *BuildError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return "policy bundle: " + strings.Join(parts, "; ")
}

// ErrInvalid is wrapped by every error of Build.
var ErrInvalid = errors.New("invalid policy bundle")

func (e *BuildError) Unwrap() error { return ErrInvalid }

func problems(ps ...Problem) error { return &BuildError{Problems: ps} }

// Unsigned is a compiled policy bundle without a revision or signature.
type Unsigned struct {
	b     bundle.Bundle
	roots []string
	files []string
}

// Files returns the source paths of the bundle, in order.
func (u *Unsigned) Files() []string { return slices.Clone(u.files) }

// Roots returns the manifest roots Sign will declare.
func (u *Unsigned) Roots() []string { return slices.Clone(u.roots) }

// Build checks and compiles files into an unsigned bundle. Every error
// wraps ErrInvalid and is a *BuildError naming the file and line.
func Build(files Files) (*Unsigned, error) {
	if len(files) == 0 {
		return nil, problems(Problem{Message: "no files: a bundle needs at least one .rego module"})
	}
	if len(files) > MaxFiles {
		return nil, problems(Problem{Message: fmt.Sprintf("%d files: at most %d", len(files), MaxFiles)})
	}
	var ps []Problem
	total, modules := 0, 0
	for _, name := range files.Names() {
		content := files[name]
		total += len(content)
		if err := checkSourcePath(name); err != nil {
			ps = append(ps, Problem{File: name, Message: err.Error()})
			continue
		}
		if len(content) > MaxFileSize {
			ps = append(ps, Problem{File: name, Message: fmt.Sprintf("%d bytes: at most %d per file", len(content), MaxFileSize)})
		}
		if strings.HasSuffix(name, ".rego") {
			modules++
			if !utf8.Valid(content) {
				ps = append(ps, Problem{File: name, Message: "not UTF-8 text"})
			}
		}
	}
	if total > MaxContentSize {
		ps = append(ps, Problem{Message: fmt.Sprintf("%d bytes in all: at most %d", total, MaxContentSize)})
	}
	if modules == 0 && len(ps) == 0 {
		ps = append(ps, Problem{Message: "no .rego module: the agent needs " + AllowRule})
	}
	if len(ps) > 0 {
		return nil, problems(ps...)
	}
	mf := make([]memFile, 0, len(files))
	for _, name := range files.Names() {
		mf = append(mf, memFile{name: name, data: files[name]})
	}
	b, err := readBundle(mf, nil)
	if err != nil {
		return nil, readProblems(err)
	}
	if err := compile(&b); err != nil {
		return nil, err
	}
	roots, err := rootsOf(&b)
	if err != nil {
		return nil, err
	}
	return &Unsigned{b: b, roots: roots, files: files.Names()}, nil
}

// checkSourcePath accepts a clean relative slash path to a module or a
// data document.
func checkSourcePath(name string) error {
	if err := checkPath(name); err != nil {
		return err
	}
	base := path.Base(name)
	switch {
	case strings.HasSuffix(base, ".rego"):
	case base == "data.json", base == "data.yaml", base == "data.yml":
	default:
		return errors.New("not a policy module (.rego) or a data document (data.json, data.yaml)")
	}
	return nil
}

// checkPath accepts a clean relative slash path without hidden parts.
func checkPath(name string) error {
	switch {
	case name == "", len(name) > 1024:
		return errors.New("path must be 1 to 1024 bytes")
	case !utf8.ValidString(name) || strings.ContainsAny(name, "\\\x00"):
		return errors.New("path must be UTF-8 without backslashes")
	case strings.HasPrefix(name, "/") || path.Clean(name) != name:
		return errors.New("path must be relative and clean (no leading /, ., .. or //)")
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == ".." || strings.HasPrefix(seg, ".") {
			return errors.New("path must not have hidden (.name) or .. components")
		}
		for _, r := range seg {
			if r < 0x20 || r == 0x7f {
				return errors.New("path must not contain control characters")
			}
		}
	}
	return nil
}

// compile compiles b's modules with the device capabilities and checks the
// allow rule exists.
func compile(b *bundle.Bundle) error {
	mods := make(map[string]*ast.Module, len(b.Modules))
	for _, m := range b.Modules {
		mods[m.Path] = m.Parsed
	}
	c := ast.NewCompiler().WithCapabilities(Capabilities())
	c.Compile(mods)
	if c.Failed() {
		return astProblems(c.Errors)
	}
	if len(c.GetRulesExact(ast.MustParseRef(AllowRule))) == 0 {
		return problems(Problem{Message: "no rule " + AllowRule + ": the agent evaluates " + Query +
			" and installs a package only when its allow is true (declare `package tensorguard.install` and an allow rule)"})
	}
	return nil
}

// rootsOf returns the first segment of every package path and every
// top-level data key, sorted and unique.
func rootsOf(b *bundle.Bundle) ([]string, error) {
	set := map[string]bool{}
	for _, m := range b.Modules {
		p := m.Parsed.Package.Path
		if len(p) < 2 {
			return nil, problems(Problem{File: cleanFile(m.Path), Message: "package must be below data"})
		}
		s, ok := p[1].Value.(ast.String)
		if !ok {
			return nil, problems(Problem{File: cleanFile(m.Path), Message: "package path must start with a name"})
		}
		set[string(s)] = true
	}
	for k := range b.Data {
		set[k] = true
	}
	roots := make([]string, 0, len(set))
	for k := range set {
		if k == "" || strings.Contains(k, "/") {
			return nil, problems(Problem{Message: fmt.Sprintf("data key %q cannot be a bundle root", k)})
		}
		roots = append(roots, k)
	}
	sort.Strings(roots)
	return roots, nil
}

func cleanFile(f string) string { return strings.TrimPrefix(f, "/") }

// astProblems converts OPA's parse and compile errors.
func astProblems(errs ast.Errors) error {
	ps := make([]Problem, 0, len(errs))
	for _, e := range errs {
		p := Problem{Code: e.Code, Message: e.Message}
		if e.Location != nil {
			p.File, p.Line, p.Column = cleanFile(e.Location.File), e.Location.Row, e.Location.Col
		}
		ps = append(ps, p)
	}
	if len(ps) == 0 {
		ps = append(ps, Problem{Message: "compilation failed"})
	}
	return problems(ps...)
}

// readProblems converts an error of the bundle reader on sources.
func readProblems(err error) error {
	var errs ast.Errors
	if errors.As(err, &errs) {
		return astProblems(errs)
	}
	var ae *ast.Error
	if errors.As(err, &ae) {
		return astProblems(ast.Errors{ae})
	}
	msg := err.Error()
	msg = strings.ReplaceAll(msg, "bundle load failed on /", "")
	return problems(Problem{Message: msg})
}

// ReadDir reads a policy directory into Files: every *.rego file except
// OPA tests (*_test.rego) and every data.json, data.yaml and data.yml, at
// any depth. Hidden files and directories (.git, …) and other files
// (README.md, …) are skipped; a symbolic link or any other special file
// is an error, as is a file over MaxFileSize.
func ReadDir(dir string) (Files, error) {
	files := Files{}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("policy directory: %w", err)
	}
	defer root.Close()
	err = fs.WalkDir(root.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("%s: not a regular file (symbolic links and special files are refused)", filepath.Join(dir, p))
		}
		base := path.Base(p)
		keep := (strings.HasSuffix(base, ".rego") && !strings.HasSuffix(base, "_test.rego")) ||
			base == "data.json" || base == "data.yaml" || base == "data.yml"
		if !keep {
			return nil
		}
		if len(files) >= MaxFiles {
			return fmt.Errorf("%s: more than %d policy and data files", dir, MaxFiles)
		}
		f, err := root.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
		if err != nil {
			return err
		}
		if len(b) > MaxFileSize {
			return fmt.Errorf("%s: larger than %d bytes", filepath.Join(dir, p), MaxFileSize)
		}
		files[p] = b
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read policy directory: %w", err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("policy directory %s holds no .rego or data file", dir)
	}
	return files, nil
}

// memFile is one file handed to OPA's bundle reader.
type memFile struct {
	name string // relative, no leading slash
	data []byte
}

// memLoader is a bundle.DirectoryLoader over files already in memory (and
// already bounded), so that OPA's reader never touches a tar stream we have
// not checked.
type memLoader struct {
	files []memFile
	i     int
}

var _ bundle.DirectoryLoader = (*memLoader)(nil)

func (l *memLoader) NextFile() (*bundle.Descriptor, error) {
	if l.i >= len(l.files) {
		return nil, io.EOF
	}
	f := l.files[l.i]
	l.i++
	p := "/" + f.name
	return bundle.NewDescriptor(p, p, bytes.NewBuffer(f.data)), nil
}

func (l *memLoader) WithFilter(filter.LoaderFilter) bundle.DirectoryLoader   { return l }
func (l *memLoader) WithPathFormat(bundle.PathFormat) bundle.DirectoryLoader { return l }
func (l *memLoader) WithSizeLimitBytes(int64) bundle.DirectoryLoader         { return l }
func (l *memLoader) WithFollowSymlinks(bool) bundle.DirectoryLoader          { return l }

// readBundle runs OPA's reader over files: with vc nil the bundle must be
// unsigned sources, else it must verify under vc.
func readBundle(files []memFile, vc *bundle.VerificationConfig) (bundle.Bundle, error) {
	r := bundle.NewCustomReader(&memLoader{files: files}).
		WithCapabilities(Capabilities()).
		WithRegoVersion(ast.RegoV1).
		WithSizeLimitBytes(MaxFileSize + 1)
	if vc != nil {
		r = r.WithBundleVerificationConfig(vc)
	} else {
		r = r.WithSkipBundleVerification(true)
	}
	return r.Read()
}
