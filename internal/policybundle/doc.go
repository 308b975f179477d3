// Package policybundle builds, signs, verifies and evaluates the fleet
// policy bundles of TensorGuardFlow (docs/policy.md). It is shared by the
// control plane (which compiles and signs what an operator pushes), tgctl
// (which reads a policy directory) and the agent (which verifies, keeps and
// evaluates the active bundle); it imports neither of them.
//
// # Format
//
// A bundle is an OPA bundle (github.com/open-policy-agent/opa/v1/bundle): a
// gzipped tar holding the Rego modules, one /data.json, a /.manifest and a
// /.signatures.json. The manifest carries
//
//	revision      the fleet's policy revision, a positive decimal integer
//	              that the control plane assigns (1, 2, 3, … per fleet)
//	roots         the first path segment of every package and of every
//	              top-level data key: the bundle owns exactly these
//	rego_version  1
//	metadata      {"tensorguard": {"tenant", "fleet", "created_at"}}
//
// The signature is OPA's bundle signature: one compact JWS (ES256, ECDSA
// P-256 with SHA-256) over the SHA-256 of every file, the manifest
// included. The verifier uses only the key it was given, never a key or an
// algorithm named in the bundle, and refuses a bundle with a file that is
// not signed, a signed file that is missing, a second signature, or any
// entry other than regular files (see Verify).
//
// # Guarantees
//
//   - Build refuses sources that do not compile (the error names the file,
//     line and column), that use a built-in with side effects (http.send,
//     net.lookup_ip_addr, opa.runtime), or that define no
//     data.tensorguard.install.allow rule.
//   - Verify returns a bundle only if every byte of its content is covered by
//     a signature of the pinned key. The revision, tenant and fleet it
//     reports come from the signed manifest. Anti-rollback (a revision not
//     newer than the installed one) is the caller's check.
//   - Evaluate is deny by default: anything but a boolean true at
//     data.tensorguard.install.allow is a denial, with a reason.
//   - Reading is bounded: MaxBundleSize compressed, MaxContentSize in all
//     after decompression, MaxFiles entries.
package policybundle
