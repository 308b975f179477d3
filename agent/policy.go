package agent

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"

	"github.com/tensorguard/tensorguardflow/agent/internal/enroll"
	"github.com/tensorguard/tensorguardflow/agent/internal/outbox"
	"github.com/tensorguard/tensorguardflow/agent/internal/policy"
	"github.com/tensorguard/tensorguardflow/agent/internal/state"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
)

// newPolicy returns the fleet policy manager (docs/policy.md): it fetches
// the signed bundle over the device's mTLS identity, keeps it in the state
// file, and decides installs (it is the install pipeline's Policy).
func (a *Agent) newPolicy(id *enroll.Identity, stored state.Identity, roots *x509.CertPool, db *state.DB, box *outbox.Outbox) (*policy.Manager, error) {
	fetcher, err := policy.NewHTTPFetcher(cmp.Or(stored.ControlPlaneURL, a.cfg.Load().ServerURL), &tls.Config{
		MinVersion:           tls.VersionTLS12,
		RootCAs:              roots,
		GetClientCertificate: a.certs.get,
	})
	if err != nil {
		return nil, err
	}
	return policy.New(policy.Config{
		Tenant: id.TenantID, Fleet: id.FleetID, Device: id.DeviceID,
		Fetcher: fetcher, Store: db,
		Outbox: box, TelemetryTopic: mqttacl.TelemetryTopic(id.TenantID, id.DeviceID),
		Logger: a.log.With("subsystem", "policy"),
	})
}
