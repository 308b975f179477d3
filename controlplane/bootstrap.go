package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/broker"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/ca"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/server"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/kek"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
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

// MosquittoFiles are the files WriteMosquittoConfig writes.
type MosquittoFiles struct {
	Dir string `json:"dir"`
	// Config is the mosquitto.conf snippet (also written as mosquitto.conf).
	Config string `json:"config"`
	// CAFile holds every tenant root and the platform root.
	CAFile string `json:"ca_file"`
	// CertFile and KeyFile are the broker's server certificate and key.
	CertFile string `json:"cert_file"`
	KeyFile  string `json:"key_file"`
	// ACLFile holds one block per enrolled device, enabled operator and
	// the control plane.
	ACLFile string `json:"acl_file"`
	// ClientCertFile and ClientKeyFile are the control plane's own client
	// identity for the external broker.
	ClientCertFile string `json:"client_cert_file"`
	ClientKeyFile  string `json:"client_key_file"`
}

// WriteMosquittoConfig writes what an external mosquitto needs to enforce
// the embedded broker's rules into dir and returns the paths and the
// mosquitto.conf snippet. Rerun it (and SIGHUP mosquitto) after devices
// enroll or are revoked, or tenants are added.
func WriteMosquittoConfig(ctx context.Context, cfg Config, dir string) (MosquittoFiles, error) {
	cfg.Finish()
	if err := cfg.Validate(); err != nil {
		return MosquittoFiles{}, fmt.Errorf("config: %w", err)
	}
	provider, err := openKEK(cfg)
	if err != nil {
		return MosquittoFiles{}, err
	}
	st, err := store.Open(ctx, cfg.DatabaseURL)
	if err != nil {
		return MosquittoFiles{}, fmt.Errorf("open database: %w", err)
	}
	defer st.Close()
	auth, err := ca.Open(ctx, ca.Options{Store: st, KEK: provider, DataDir: cfg.DataDir})
	if err != nil {
		return MosquittoFiles{}, err
	}
	ids := []mqttacl.Identity{mqttacl.ControlPlane("")}
	for _, t := range auth.Tenants() {
		devs, err := st.ListDevices(ctx, t, store.DeviceFilter{Status: store.DeviceEnrolled})
		if err != nil {
			return MosquittoFiles{}, err
		}
		for _, d := range devs {
			ids = append(ids, mqttacl.Device(t, d.ID))
		}
		ops, err := st.ListOperators(ctx, t)
		if err != nil {
			return MosquittoFiles{}, err
		}
		for _, o := range ops {
			if !o.Disabled {
				ids = append(ids, mqttacl.Operator(t, o.ID))
			}
		}
	}
	acl, err := broker.MosquittoACL(ids)
	if err != nil {
		return MosquittoFiles{}, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return MosquittoFiles{}, err
	}
	if err := os.MkdirAll(abs, 0o750); err != nil {
		return MosquittoFiles{}, err
	}
	f := MosquittoFiles{
		Dir: abs, CAFile: filepath.Join(abs, "ca.pem"), CertFile: filepath.Join(abs, "server.crt"),
		KeyFile: filepath.Join(abs, "server.key"), ACLFile: filepath.Join(abs, "acl"),
		ClientCertFile: filepath.Join(abs, "controlplane.crt"), ClientKeyFile: filepath.Join(abs, "controlplane.key"),
	}
	srvCert, srvKey, err := auth.IssueServerCert(cfg.HTTP.Hostnames)
	if err != nil {
		return MosquittoFiles{}, err
	}
	cpCert, cpKey, err := auth.IssueControlPlaneCert("")
	if err != nil {
		return MosquittoFiles{}, err
	}
	f.Config = broker.MosquittoConfig(broker.MosquittoOptions{
		Port: portOf(cfg.MQTT.Listen, 8883), CAFile: f.CAFile, CertFile: f.CertFile, KeyFile: f.KeyFile, ACLFile: f.ACLFile,
	})
	// mosquitto 2 reads its certificates after dropping to its own user:
	// give the directory to group mosquitto (chgrp -R mosquitto DIR).
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{f.CAFile, auth.AllRootsPEM(), 0o644},
		{f.CertFile, srvCert, 0o644},
		{f.KeyFile, srvKey, 0o640},
		{f.ACLFile, []byte(acl), 0o644},
		{f.ClientCertFile, cpCert, 0o644},
		{f.ClientKeyFile, cpKey, 0o600},
		{filepath.Join(abs, "mosquitto.conf"), []byte(f.Config), 0o644},
	} {
		if err := writeFileAtomic(w.path, w.data, w.mode); err != nil {
			return MosquittoFiles{}, err
		}
	}
	return f, nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
