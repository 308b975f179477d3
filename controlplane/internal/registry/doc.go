// Package registry is the control plane's package registry and key
// custody: the tenants' pinned publishers, verified TGSP packages stored by
// content address, and the release of a package's key to one device (a
// key grant).
//
// # Key custody
//
// Each tenant has its own TGSP recipient key (X-Wing), created on first
// use. Its public half is what publishers pack to (`tgsp pack --recipient`
// with the key `tgctl package recipient` prints); its private half is
// stored only sealed under the tenant's data key, which the KEK wraps
// (internal/kek, as the tenant CA's key is), and is unsealed into memory
// when first needed. One key per tenant rather than one for the platform:
// a tenant's packages can be opened only with that tenant's key, so a
// package pushed to another tenant, or a sealed key copied to another
// tenant's row, is useless there (DESIGN.md §6, tenants isolated by a
// per-tenant DEK under the KEK).
//
// A package's DEK is unwrapped only inside GrantKey, in memory, and at
// once wrapped to the device's KEM key (tgsp.Package.GrantKey). It is never
// stored, logged or returned unwrapped; push only checks that it unwraps.
//
// # Push
//
// Push streams the body into the staging directory (bounded by
// Options.MaxPackageSize, never in memory), opens it with tgsp and verifies
// the signature against the tenant's publishers and every shard hash,
// refuses an expired package and one the tenant's recipient key cannot
// open, and then stores it: the blob first (BlobStore.Put, a rename for the
// local store), then the record and the caller's audit entry in one
// transaction. The id of a package is the SHA-256 of its file; a name and
// version exist once per tenant — the identical file again is idempotent,
// other content is ErrConflict.
//
// # Blobs
//
// BlobStore is the seam for DESIGN.md §7's object storage. LocalBlobs keeps
// <dir>/<tenant>/sha256/<xx>/<id> (per tenant: no blob is shared between
// tenants, so deleting one tenant's package never touches another's), and
// a staging directory beside them so that storing is a rename. A blob never
// changes; downloads (ServeBlob) support HTTP ranges so devices resume.
//
// # Key grants
//
// GrantKey releases a package key to a device only if the device is
// enrolled (not revoked), has registered a KEM public key, is not
// quarantined, and its attestation verdict is trusted and fresh (given no
// more than two attestation intervals ago, the point at which the
// attestation service would call it stale). A device without a TPM cannot
// be attested: it gets keys only while its fleet's policy admits devices
// without a TPM (allow_no_tpm). Then a GrantAuthorizer — the rollout
// engine's half — must name the device's fleet for the job, and the package
// must be in the registry, still signed by a pinned publisher (removing a
// publisher stops key releases for its packages) and not expired. The
// device state is checked again inside the transaction that records the
// grant (the caller's audit entry), so every released key is audited.
//
// The control plane passes the rollout engine (controlplane/internal/rollout)
// as the authorizer. DeviceFleetAuthorizer is the default without one; its
// doc says what an authorizer for rollouts must add to it.
//
// Storing and deleting are serialised within a process. Known limit: a push
// racing a delete of the identical package on another replica can leave the
// record without its blob (downloads and grants then fail with 500); push
// it again.
package registry
