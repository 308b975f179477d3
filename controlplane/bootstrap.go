package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/ca"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/server"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/kek"
)

// ErrTenantExists is returned by Init for a tenant that already exists.
var ErrTenantExists = errors.New("tenant already exists")

// InitResult is what Init created. APIKey exists only here: show it once.
type InitResult struct {
	Tenant       string `json:"tenant"`
	OperatorID   string `json:"operator_id"`
	APIKeyID     string `json:"api_key_id"`
	APIKey       string `json:"api_key"`
	CAHash       string `json:"ca_hash"`
	DataDir      string `json:"data_dir"`
	KEKGenerated bool   `json:"kek_generated"`
	KEKSource    string `json:"kek_source"`
}

// Init is the first run (and adds further tenants): it migrates the
// database, makes sure there is a KEK (in development it generates a key file
// in the data dir when none is configured; in production the KEK must come
// from TG_KEY_MASTER or an operator-provided file), creates the platform CA
// if absent, then in one transaction the tenant with its DEK and CA, an
// admin operator, an admin API key and the first audit entry. It refuses a
// tenant that exists (ErrTenantExists).
func Init(ctx context.Context, cfg Config, tenant string) (InitResult, error) {
	cfg.Finish()
	if err := cfg.Validate(); err != nil {
		return InitResult{}, fmt.Errorf("config: %w", err)
	}
	if !store.ValidTenantID(tenant) {
		return InitResult{}, fmt.Errorf("tenant %q: must match ^[a-z0-9][a-z0-9-]{0,62}$", tenant)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return InitResult{}, fmt.Errorf("data dir: %w", err)
	}
	res := InitResult{Tenant: tenant, DataDir: cfg.DataDir}
	if cfg.KEK.File != "" {
		if _, err := os.Stat(cfg.KEK.File); errors.Is(err, fs.ErrNotExist) {
			if cfg.Production() {
				return InitResult{}, fmt.Errorf("kek: %s does not exist; with %s=production provide the KEK in %s or as that file",
					cfg.KEK.File, EnvVarEnvironment, EnvVarKeyMaster)
			}
			if err := kek.GenerateKeyFile(cfg.KEK.File); err != nil {
				return InitResult{}, fmt.Errorf("generate development KEK: %w", err)
			}
			res.KEKGenerated = true
		}
	}
	provider, err := openKEK(cfg)
	if err != nil {
		return InitResult{}, err
	}
	if lp, ok := provider.(interface{ Source() string }); ok {
		res.KEKSource = lp.Source()
	}
	st, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return InitResult{}, fmt.Errorf("open database: %w", err)
	}
	defer st.Close()
	if _, err := st.GetTenant(ctx, tenant); err == nil {
		return InitResult{}, fmt.Errorf("%w: %s", ErrTenantExists, tenant)
	} else if !errors.Is(err, store.ErrNotFound) {
		return InitResult{}, err
	}
	if _, err := ca.EnsurePlatformCA(ctx, provider, cfg.DataDir, time.Now); err != nil {
		return InitResult{}, err
	}
	wrappedDEK, tenantCA, err := ca.NewTenantKeys(ctx, provider, tenant, time.Now)
	if err != nil {
		return InitResult{}, err
	}
	err = st.WithTx(ctx, func(tx *store.Tx) error {
		if _, err := tx.CreateTenant(ctx, store.Tenant{ID: tenant, WrappedDEK: wrappedDEK}); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return fmt.Errorf("%w: %s", ErrTenantExists, tenant)
			}
			return err
		}
		if _, err := tx.CreateCA(ctx, tenant, tenantCA); err != nil {
			return err
		}
		op, err := tx.CreateOperator(ctx, tenant, store.Operator{Name: "admin", Role: store.RoleAdmin})
		if err != nil {
			return err
		}
		key, secret, err := tx.CreateAPIKey(ctx, tenant, store.APIKey{OperatorID: op.ID, Role: store.RoleAdmin, Name: "init"})
		if err != nil {
			return err
		}
		res.OperatorID, res.APIKeyID, res.APIKey = op.ID, key.ID, secret
		return server.AppendAudit(ctx, tx, time.Now(), tenant, "system", "tenant.create", tenant, "", map[string]any{
			"operator_id": op.ID, "api_key_id": key.ID,
		})
	})
	if err != nil {
		return InitResult{}, fmt.Errorf("create tenant %s: %w", tenant, err)
	}
	auth, err := ca.Open(ctx, ca.Options{Store: st, KEK: provider, DataDir: cfg.DataDir})
	if err != nil {
		return InitResult{}, err
	}
	res.CAHash = auth.CAHash()
	return res, nil
}
