package install

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tensorguard/tensorguardflow/internal/wire"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

// parsePublishers accepts each pinned key as a PEM key file or as its bare
// body (the bytes inside the PEM block); unusable entries are skipped.
func parsePublishers(keys [][]byte) []*tgsp.SignerPublicKey {
	var out []*tgsp.SignerPublicKey
	for _, b := range keys {
		if !bytes.Contains(b, []byte("-----BEGIN")) {
			b = pem.EncodeToMemory(&pem.Block{Type: "TGSP SIGNER PUBLIC KEY", Bytes: b})
		}
		if k, err := tgsp.ParseSignerPublicKey(b); err == nil {
			out = append(out, k)
		}
	}
	return out
}

// openVerified opens the package at path and verifies it completely
// (signature by one of trust, expiry at now, every shard hash). The caller
// closes the file.
func (in *Installer) openVerified(ctx context.Context, path string, trust []*tgsp.SignerPublicKey, now time.Time) (*tgsp.Package, *os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, refuse(wire.JobReasonInternal, "open package: %v", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, refuse(wire.JobReasonInternal, "open package: %v", err)
	}
	pkg, err := tgsp.Open(f, fi.Size())
	if err == nil {
		err = pkg.Verify(ctx, trust, now, 0)
	}
	if err != nil {
		f.Close()
		switch {
		case ctx.Err() != nil:
			return nil, nil, ctx.Err()
		case errors.Is(err, tgsp.ErrUntrustedSigner):
			return nil, nil, refuse(wire.JobReasonPublisher, "%v", err)
		case errors.Is(err, tgsp.ErrExpired):
			return nil, nil, refuse(wire.JobReasonExpired, "%v", err)
		case errors.Is(err, tgsp.ErrBadSignature), errors.Is(err, tgsp.ErrHashMismatch):
			return nil, nil, refuse(wire.JobReasonSignature, "%v", err)
		case errors.Is(err, tgsp.ErrMalformed):
			return nil, nil, refuse(wire.JobReasonMalformed, "%v", err)
		}
		return nil, nil, refuse(wire.JobReasonInternal, "verify package: %v", err)
	}
	return pkg, f, nil
}

// checkInstallable applies the job, device-type and anti-rollback rules to
// a verified package.
func (in *Installer) checkInstallable(pkg *tgsp.Package, ref wire.PackageRef, slots slotPair) error {
	m := pkg.Manifest
	if m.Name != ref.Name || m.Version != ref.Version {
		return refuse(wire.JobReasonMalformed, "the package is %s %s, the job names %s %s", m.Name, m.Version, ref.Name, ref.Version)
	}
	if dt := in.cfg.Facts().DeviceType; !m.TargetsDevice(dt) {
		return refuse(wire.JobReasonDeviceType, "the package targets %v, this device is %q", m.DeviceTypes, dt)
	}
	v, err := tgsp.ParseVersion(m.Version)
	if err != nil {
		return refuse(wire.JobReasonMalformed, "version: %v", err)
	}
	if a := slots.Active; a != nil && a.Name == m.Name {
		if av, err := tgsp.ParseVersion(a.Version); err == nil && v.Compare(av) <= 0 {
			return refuse(wire.JobReasonOlderVersion, "version %s is not newer than the installed %s", m.Version, a.Version)
		}
	}
	var highest string
	if err := in.view(func(tx *bolt.Tx) error { highest = getHighest(tx, m.Name); return nil }); err != nil {
		return err
	}
	if highest != "" {
		if hv, err := tgsp.ParseVersion(highest); err == nil && v.Compare(hv) < 0 {
			return refuse(wire.JobReasonOlderVersion, "version %s is below %s, committed on this device before", m.Version, highest)
		}
	}
	return nil
}

// evaluatePolicy asks the fleet's policy. trust are the publishers the job
// pins (the control plane's pinned publishers of the tenant): the policy
// sees their key ids as input.publishers (docs/policy.md).
func (in *Installer) evaluatePolicy(ctx context.Context, pkg *tgsp.Package, rec *jobRecord, slots slotPair, trust []*tgsp.SignerPublicKey) error {
	if in.cfg.Policy == nil {
		return nil
	}
	input := PolicyInput{
		Manifest: pkg.Manifest,
		Device:   in.cfg.Facts(),
		Job:      PolicyJob{ID: rec.Job.ID, RolloutID: rec.Job.RolloutID, Kind: rec.Job.Kind, Attempt: rec.Job.Attempt},
		Now:      in.cfg.Now().UTC(),
	}
	for _, k := range trust {
		input.Publishers = append(input.Publishers, k.KeyID())
	}
	// Open has validated both documents against their schemas already.
	if pkg.DPCertJSON != nil {
		input.DPCert, _ = tgsp.ParseDPCert(pkg.DPCertJSON)
	}
	if pkg.EvidenceJSON != nil {
		input.Evidence, _ = tgsp.ParseEvidence(pkg.EvidenceJSON)
	}
	if in.cfg.Verdict != nil {
		input.Attestation = in.cfg.Verdict()
	}
	if a := slots.Active; a != nil {
		input.Installed = &InstalledPackage{Name: a.Name, Version: a.Version, PackageID: a.PackageID}
	}
	allow, reasons, err := in.cfg.Policy.Evaluate(ctx, input)
	switch {
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return refuse(wire.JobReasonPolicyDeny, "policy evaluation failed: %v", err)
	case !allow:
		if len(reasons) == 0 {
			reasons = []string{"denied by policy"}
		}
		return refuse(wire.JobReasonPolicyDeny, "%s", strings.Join(reasons, "; "))
	}
	return nil
}

// openGrant requests the key grant (once; it is kept with the job) and
// opens it with the device's key.
func (in *Installer) openGrant(ctx context.Context, pkg *tgsp.Package, rec *jobRecord) (*tgsp.DEK, error) {
	if in.cfg.Keys == nil {
		return nil, refuse(wire.JobReasonKeyGrant, "this agent has no device key to open key grants")
	}
	if rec.Grant == nil {
		req := wire.KeyGrantRequest{JobID: rec.Job.ID, PackageID: rec.Job.Package.ID}
		for attempt := 1; ; attempt++ {
			g, err := in.cfg.Client.KeyGrant(ctx, req)
			if err == nil {
				rec.Grant = g.Grant
				break
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var api *APIError
			if errors.As(err, &api) && !temporary(err) {
				return nil, refuse(wire.JobReasonKeyGrant, "%v", err)
			}
			if attempt >= in.cfg.DownloadAttempts {
				return nil, refuse(wire.JobReasonKeyGrant, "after %d attempts: %v", attempt, err)
			}
			in.log.Warn("key grant request failed; retrying", "job", rec.Job.ID, "attempt", attempt, "err", err)
			if err := sleep(ctx, in.cfg.Backoff.Delay(attempt)); err != nil {
				return nil, err
			}
		}
		if err := in.update(func(tx *bolt.Tx) error { return putJob(tx, rec) }); err != nil {
			return nil, err
		}
		if err := in.checkpoint("grant:stored"); err != nil {
			return nil, err
		}
	}
	dek, err := in.cfg.Keys.OpenGrant(pkg, rec.Grant)
	if err != nil {
		return nil, refuse(wire.JobReasonKeyGrant, "open the key grant: %v", err)
	}
	return dek, nil
}
