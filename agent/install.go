package agent

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"time"

	"github.com/tensorguard/tensorguardflow/agent/internal/enroll"
	"github.com/tensorguard/tensorguardflow/agent/internal/inference"
	"github.com/tensorguard/tensorguardflow/agent/internal/install"
	"github.com/tensorguard/tensorguardflow/agent/internal/outbox"
	"github.com/tensorguard/tensorguardflow/agent/internal/state"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// PackagesDir is the folder beside the state file where the install
// pipeline keeps downloads and installed packages, encrypted as shipped.
const PackagesDir = "packages"

// newInstaller returns the install pipeline (package install,
// docs/packages.md): jobs from cmd/job and from the device's open-job
// list, fetched over its mTLS identity; packages kept encrypted under
// <state dir>/packages; key grants opened with the device's KEM key; the
// fleet's policy; models run by the configured runtime.
func (a *Agent) newInstaller(r *resources, id *enroll.Identity, stored state.Identity, roots *x509.CertPool,
	box *outbox.Outbox, pol install.Policy) (*install.Installer, error) {
	cfg := a.cfg.Load()
	client, err := install.NewClient(cmp.Or(stored.ControlPlaneURL, cfg.ServerURL), &tls.Config{
		MinVersion:           tls.VersionTLS12,
		RootCAs:              roots,
		GetClientCertificate: a.certs.get,
	})
	if err != nil {
		return nil, err
	}
	var rt install.Runtime // runtime "none": installs fail with ACTIVATION
	if backends := a.backends(r); len(backends) > 0 {
		rt = inference.NewSelector(a.log.With("subsystem", "inference"), backends...)
	}
	return install.New(install.Config{
		Store:  r.db,
		Outbox: box,
		Client: client,
		Facts: func() install.DeviceFacts {
			c := a.cfg.Load() // labels may change on SIGHUP
			return install.DeviceFacts{
				DeviceID: id.DeviceID, TenantID: id.TenantID, FleetID: id.FleetID,
				DeviceType: c.DeviceType, Labels: c.Labels, TPMKind: string(r.kind), AgentVersion: Version,
			}
		},
		PackageDir: filepath.Join(filepath.Dir(cfg.StatePath), PackagesDir),
		Runtime:    rt,
		OnServe: func(slot install.Slot, m install.Model, serving bool) {
			a.stats.SetLoaded(inference.ModelKey{Name: slot.Name, Version: slot.Version, Backend: m.Backend()}, serving)
		},
		Keys:   r.kem,
		Policy: pol,
		// The policy sees the device's own verdict as the control plane
		// holds it, fetched at the policy step (nil when unreachable: a
		// policy requiring "trusted" then denies).
		Verdict: func() *wire.Verdict {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			v, err := client.Attestation(ctx)
			if err != nil {
				a.log.Warn("own attestation verdict unavailable for the install policy", "err", err)
				return nil
			}
			return v
		},
		MaxPackageBytes:  cfg.Install.MaxPackageBytes,
		MaxModelBytes:    cfg.Install.MaxModelBytes,
		DownloadAttempts: cfg.Install.DownloadAttempts,
		Logger:           a.log.With("subsystem", "install"),
	})
}
