package controlplane

import (
	"context"
	"fmt"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/ca"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/kek"
)

// KEKRotation reports what RotateKEK did.
type KEKRotation struct {
	// Tenants is how many tenants' data keys were rewrapped; Already how
	// many were under the new KEK before (an interrupted rotation re-run).
	Tenants int `json:"tenants"`
	Already int `json:"already"`
	// PlatformKey is "rewrapped" or "already".
	PlatformKey string `json:"platform_key"`
}

// RotateKEK rewraps everything the KEK protects under the key next names:
// every tenant's data key (one transaction) and the platform CA key (staged
// beside it, moved into place after the transaction commits). Tenant data
// — CA keys, package keys, trainer artifacts — is sealed under the data
// keys, which do not change, so all of it stays readable. Run it with the
// control plane stopped, then point kek (or TG_KEY_MASTER) at the new key
// and start it. It is safe to run again after an interruption: what is
// already under the new KEK is left as it is.
func RotateKEK(ctx context.Context, cfg Config, next kek.Config) (KEKRotation, error) {
	var r KEKRotation
	old, err := openKEK(cfg)
	if err != nil {
		return r, err
	}
	nxt, err := kek.Open(next)
	if err != nil {
		return r, fmt.Errorf("new kek: %w", err)
	}
	if cfg.Production() {
		if err := nxt.ProductionReady(); err != nil {
			return r, fmt.Errorf("new kek: refused with %s=production: %w", EnvVarEnvironment, err)
		}
	}
	staged, commit, err := ca.RewrapPlatformKey(ctx, old, nxt, cfg.DataDir)
	if err != nil {
		return r, err
	}
	r.PlatformKey = "rewrapped"
	if staged == "" {
		r.PlatformKey = "already"
	}
	st, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return r, fmt.Errorf("open database: %w", err)
	}
	defer st.Close()
	err = st.WithTx(ctx, func(tx *store.Tx) error {
		tenants, err := tx.ListTenants(ctx)
		if err != nil {
			return err
		}
		for _, t := range tenants {
			w, changed, err := ca.RewrapTenantDEK(ctx, old, nxt, t.ID, t.WrappedDEK)
			if err != nil {
				return err
			}
			if !changed {
				r.Already++
				continue
			}
			if err := tx.SetTenantDEK(ctx, t.ID, w); err != nil {
				return err
			}
			r.Tenants++
		}
		return nil
	})
	if err != nil {
		return r, fmt.Errorf("rewrap the tenants' data keys (nothing changed): %w", err)
	}
	if err := commit(); err != nil {
		return r, fmt.Errorf("the tenants' keys are rewrapped; move %s into place to finish (or run rotate-kek again): %w", staged, err)
	}
	return r, nil
}
