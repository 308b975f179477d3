// Package archtest enforces the module's import rules (DESIGN.md §2) as a
// test, so a layering mistake fails `go test ./internal/archtest/` and
// `make check` instead of surviving review.
//
// The rules, applied to every .go file of the module (test files included,
// build constraints ignored, so an arm64-only or cgo-only file cannot hide a
// violation):
//
//   - tgsp: nothing under tgsp/ imports a package of this module outside
//     tgsp/, so the package format stays a self-contained library.
//   - components: agent/, controlplane/ and trainer/ never import each other.
//     The one exception is the control plane's main,
//     controlplane/cmd/tg-controlplane, which composes the trainer and may
//     import trainer/.
//   - multi-component: a package outside those three components and outside
//     integration/ may import at most one of them; driving several components
//     is integration's job.
//   - integration: nothing outside integration/ imports integration/.
//   - cgo: every file that says `import "C"` lives under cgo/, so the rest of
//     the tree cross-builds with CGO_ENABLED=0.
//
// The check parses import blocks only (go/parser's ImportsOnly mode) over a
// walk of the module root found with `go env GOMOD`. It skips what the go
// command skips: testdata/ and vendor/ directories, names starting with "."
// or "_", and nested modules. It needs no build and no network.
//
// The rules live in [Check], which works on a synthetic list of files, so the
// tests show each rule failing on a violating import set before they show the
// real tree passing.
package archtest
