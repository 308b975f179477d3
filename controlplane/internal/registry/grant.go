package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// ErrGrantRefused matches every *GrantRefusedError.
var ErrGrantRefused = errors.New("key grant refused")

// GrantRefusedError is a key grant the control plane refuses; Reason says
// why in words safe to show the device (and its operator). Later is set
// when the refusal may pass by itself — the device's attestation is not
// yet current (never attested, stale, or older than two intervals, as
// under load when verification lags) — so the device should ask again
// after its next attestation rather than give up.
type GrantRefusedError struct {
	Reason string
	Later  bool
}

func (e *GrantRefusedError) Error() string { return "key grant refused: " + e.Reason }

// Is makes errors.Is(err, ErrGrantRefused) true.
func (e *GrantRefusedError) Is(target error) bool { return target == ErrGrantRefused }

func refuse(format string, args ...any) error {
	return &GrantRefusedError{Reason: fmt.Sprintf(format, args...)}
}

// refuseForNow is refuse for a refusal that may pass by itself.
func refuseForNow(format string, args ...any) error {
	return &GrantRefusedError{Reason: fmt.Sprintf(format, args...), Later: true}
}

// GrantAuthorizer decides whether a device may have the key of a package
// for a job: it is the rollout engine's half of a key grant. The registry
// checks the device itself (enrolled, a KEM key, not quarantined, a fresh
// trusted attestation verdict) and that it is still in the fleet the
// authorizer names.
type GrantAuthorizer interface {
	// Authorize returns the fleet whose rollout the job belongs to, or an
	// error: a *GrantRefusedError (built with Refuse) when the job does
	// not entitle the device to the package, anything else when it could
	// not tell.
	Authorize(ctx context.Context, tenant, device, jobID, packageID string) (fleetID string, err error)
}

// Refuse returns a *GrantRefusedError, for GrantAuthorizer implementations.
func Refuse(reason string) error { return &GrantRefusedError{Reason: reason} }

// DeviceFleetAuthorizer is the GrantAuthorizer used when Options names
// none (a registry without the rollout engine: tests, tools). It holds that
// a device is entitled to a package when the package is in its tenant's
// registry and the device is enrolled, and names the device's own fleet as
// the job's: every enrolled, trusted device of a tenant can have the key of
// every package of that tenant. The job id is not looked up.
//
// An authorizer for rollouts (the control plane uses the rollout engine's)
// must add to this: the job exists in the tenant and was issued to this
// device; it is open (released, not in a terminal state, its deadline not
// passed); its rollout is active (not aborted or finished); and packageID
// is the job's package (the one to install, or for a rollback job the one
// to return to). It returns the rollout's fleet.
type DeviceFleetAuthorizer struct {
	Store *store.Store
}

var _ GrantAuthorizer = DeviceFleetAuthorizer{}

// Authorize implements GrantAuthorizer.
func (a DeviceFleetAuthorizer) Authorize(ctx context.Context, tenant, device, _, packageID string) (string, error) {
	if _, err := a.Store.GetPackage(ctx, tenant, packageID); errors.Is(err, store.ErrNotFound) {
		return "", Refuse("package " + packageID + " is not in the registry")
	} else if err != nil {
		return "", err
	}
	d, err := a.Store.GetDevice(ctx, tenant, device)
	if errors.Is(err, store.ErrNotFound) {
		return "", Refuse("unknown device")
	} else if err != nil {
		return "", err
	}
	if d.Status != store.DeviceEnrolled {
		return "", Refuse("the device is revoked")
	}
	return d.FleetID, nil
}

// GrantRequest asks for a package key for a device.
type GrantRequest struct {
	// Device is the calling device as authenticated (its mTLS identity,
	// read from the store for this request).
	Device    store.Device
	JobID     string
	PackageID string
}

// Grant is a released package key.
type Grant struct {
	Package store.Package
	// FleetID is the fleet the authorizer named.
	FleetID string
	// Bytes is the DEK wrapped to the device's KEM key (tgsp.GrantKey).
	Bytes []byte
}

// GrantKey re-wraps a package's DEK to a device's KEM key. It refuses
// (*GrantRefusedError) unless the device is enrolled, has a KEM key, is not
// quarantined and has a fresh trusted attestation verdict — or, without a
// TPM, is in a fleet that admits devices without one — and the authorizer
// names the device's fleet for the job; and unless the package is in the
// registry, still signed by a pinned publisher and not expired.
//
// The DEK is unwrapped with the control plane's recipient key in memory
// only, for the length of the call; it is never stored, logged or returned.
// The device's state is checked again inside the transaction in which
// record (the caller's audit entry) runs, so no grant is handed out that
// was not recorded against the state it was decided on.
func (r *Registry) GrantKey(ctx context.Context, req GrantRequest, record func(tx *store.Tx, g Grant) error) (Grant, error) {
	dev := req.Device
	tenant := dev.Tenant
	devKey, err := r.eligible(ctx, r.st, dev)
	if err != nil {
		return Grant{}, err
	}
	if !store.ValidPackageID(req.PackageID) {
		return Grant{}, refuse("package id %q is not 64 lowercase hex digits", req.PackageID)
	}
	fleetID, err := r.authorizer.Authorize(ctx, tenant, dev.ID, req.JobID, req.PackageID)
	if err != nil {
		return Grant{}, err
	}
	if fleetID != dev.FleetID {
		return Grant{}, refuse("job %s belongs to fleet %s, and the device is in fleet %s", req.JobID, fleetID, dev.FleetID)
	}
	pkg, err := r.st.GetPackage(ctx, tenant, req.PackageID)
	if errors.Is(err, store.ErrNotFound) {
		return Grant{}, refuse("package %s is not in the registry", req.PackageID)
	} else if err != nil {
		return Grant{}, err
	}
	grant, err := r.wrapFor(ctx, tenant, pkg, devKey)
	if err != nil {
		return Grant{}, err
	}
	g := Grant{Package: pkg, FleetID: fleetID, Bytes: grant}
	err = r.st.WithTx(ctx, func(tx *store.Tx) error {
		cur, err := tx.GetDevice(ctx, tenant, dev.ID)
		if errors.Is(err, store.ErrNotFound) {
			return refuse("unknown device")
		} else if err != nil {
			return err
		}
		if cur.FleetID != fleetID {
			return refuse("the device moved to fleet %s", cur.FleetID)
		}
		if !bytes.Equal(cur.KEMPublic, dev.KEMPublic) {
			return refuse("the device's KEM key changed; ask again")
		}
		if _, err := r.eligible(ctx, tx, cur); err != nil {
			return err
		}
		if _, err := tx.GetPackage(ctx, tenant, pkg.ID); errors.Is(err, store.ErrNotFound) {
			return refuse("package %s was deleted", pkg.ID)
		} else if err != nil {
			return err
		}
		if record != nil {
			return record(tx, g)
		}
		return nil
	})
	if err != nil {
		return Grant{}, err
	}
	return g, nil
}

// eligible checks the device's own state and returns its KEM key.
func (r *Registry) eligible(ctx context.Context, rd reader, dev store.Device) (*tgsp.RecipientPublicKey, error) {
	if dev.Status != store.DeviceEnrolled {
		return nil, refuse("the device is revoked")
	}
	if len(dev.KEMPublic) == 0 {
		return nil, refuse("the device has registered no KEM public key (an agent with package support sends one at enrollment or with PUT /api/v1/device/kem-key)")
	}
	devKey, err := tgsp.ParseRecipientPublicKeyBytes(dev.KEMPublic)
	if err != nil {
		return nil, refuse("the device's KEM public key is not an X-Wing recipient key")
	}
	quarantined := refuse("the device is quarantined: its last attestation verdict was untrusted or stale")
	fleet, err := rd.GetFleet(ctx, dev.Tenant, dev.FleetID)
	if err != nil {
		return nil, fmt.Errorf("fleet of device %s: %w", dev.ID, err)
	}
	if dev.TPMKind == store.TPMNone {
		// Nothing to attest: the fleet's admission of devices without a
		// TPM is what stands in for a verdict.
		if dev.Quarantined {
			return nil, quarantined
		}
		if !fleet.Policy.AllowNoTPM {
			return nil, refuse("the device has no TPM and fleet %s does not allow devices without one (policy allow_no_tpm)", fleet.Name)
		}
		return devKey, nil
	}
	st, err := rd.GetAttestationState(ctx, dev.Tenant, dev.ID)
	if err != nil {
		return nil, fmt.Errorf("attestation state of device %s: %w", dev.ID, err)
	}
	switch st.State {
	case store.VerdictTrusted:
	case store.VerdictUnknown, store.VerdictStale:
		// No current answer: not evidence against the device.
		return nil, refuseForNow("the device's attestation verdict is %s, not trusted (yet)", st.State)
	default:
		return nil, refuse("the device's attestation verdict is %s, not trusted", st.State)
	}
	if dev.Quarantined || st.Quarantined {
		return nil, quarantined
	}
	interval := time.Duration(fleet.Policy.Attestation.Interval)
	if interval <= 0 {
		interval = r.interval
	}
	if age := r.now().Sub(st.VerdictAt); age > 2*interval {
		return nil, refuseForNow("the device's trusted attestation verdict is %s old, more than two attestation intervals (%s)",
			age.Truncate(time.Second), 2*interval)
	}
	return devKey, nil
}

// wrapFor opens pkg's blob, checks it is still signed by a pinned
// publisher and not expired, unwraps its DEK with the control plane's key
// and wraps it to devKey.
func (r *Registry) wrapFor(ctx context.Context, tenant string, pkg store.Package, devKey *tgsp.RecipientPublicKey) ([]byte, error) {
	pub, err := r.st.GetPublisherByKeyID(ctx, tenant, pkg.PublisherKeyID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, refuse("package %s@%s is signed by key %s, which is no longer a pinned publisher", pkg.Name, pkg.Version, pkg.PublisherKeyID)
	} else if err != nil {
		return nil, err
	}
	signer, err := tgsp.ParseSignerPublicKeyBytes(pub.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("publisher %q: stored key: %w", pub.Name, err)
	}
	b, err := r.blobs.Open(ctx, tenant, pkg.ID)
	if err != nil {
		return nil, fmt.Errorf("package %s: %w", pkg.ID, err)
	}
	defer b.Close()
	p, err := tgsp.Open(b, b.Size())
	if err != nil {
		return nil, fmt.Errorf("stored package %s: %w", pkg.ID, err)
	}
	if p.ID() != pkg.SignedID {
		return nil, fmt.Errorf("stored package %s: signed id %s, the record says %s", pkg.ID, p.ID(), pkg.SignedID)
	}
	if err := p.VerifySignature([]*tgsp.SignerPublicKey{signer}, r.now()); errors.Is(err, tgsp.ErrExpired) {
		return nil, refuse("package %s@%s expired on %s", pkg.Name, pkg.Version, pkg.ExpiresAt.Format(time.RFC3339))
	} else if err != nil {
		return nil, fmt.Errorf("stored package %s: %w", pkg.ID, err)
	}
	priv, err := r.recipientKey(ctx, tenant)
	if err != nil {
		return nil, err
	}
	dek, err := p.UnwrapDEK(priv)
	if err != nil {
		return nil, fmt.Errorf("stored package %s: unwrap its key: %w", pkg.ID, err)
	}
	grant, err := p.GrantKey(dek, devKey)
	if err != nil {
		return nil, fmt.Errorf("package %s: wrap its key for the device: %w", pkg.ID, err)
	}
	return grant, nil
}
