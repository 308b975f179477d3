// Package policy keeps each tenant's policy bundle signing key
// (docs/policy.md): an ECDSA P-256 key, created on a tenant's first policy
// push, whose private part is stored sealed under the tenant's data key
// (itself wrapped by the KEK), as the tenant CA's key is, with the aad
// "policy_signing_keys/<tenant>/private_key" so that a sealed key copied to
// another tenant or table does not open. The public part is stored beside
// it, so devices get the verification key without anything being unsealed.
//
// A tenant has exactly one key for the lifetime of its devices' pins: an
// agent pins the key it first fetched and refuses bundles under any other.
// Replicas racing to create the key converge on the one stored first.
package policy
