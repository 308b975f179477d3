package api

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
	"github.com/tensorguard/tensorguardflow/internal/policybundle"
)

// PolicySigner gives the tenant's policy signing key (created on first
// use); controlplane/internal/policy.Keys is one.
type PolicySigner interface {
	SigningKey(ctx context.Context, tenant string) (policybundle.SigningKey, error)
}

// PolicyNotifier tells every enrolled device of a fleet that a new policy
// revision exists (MQTT cmd/policy). It is called after the push
// committed and must not block for long; failures are its own to log.
type PolicyNotifier interface {
	NotifyPolicy(ctx context.Context, tenant, fleetID string, revision int64)
}

// PolicyPush is the body of POST /api/v1/fleets/{fleet}/policy: the
// bundle's sources, path → content (what `tgctl policy push` reads from a
// directory).
type PolicyPush struct {
	Files map[string]string `json:"files"`
}

// PolicyRevision describes a fleet's signed policy bundle.
type PolicyRevision struct {
	FleetID   string    `json:"fleet_id"`
	Revision  int64     `json:"revision"`
	SHA256    string    `json:"sha256"`
	Size      int64     `json:"size"`
	KeyID     string    `json:"key_id"`
	CreatedBy string    `json:"created_by"`
	CreatedAt time.Time `json:"created_at"`
}

// NewPolicyRevision is the API view of a stored bundle.
func NewPolicyRevision(b store.PolicyBundle) PolicyRevision {
	return PolicyRevision{FleetID: b.FleetID, Revision: b.Revision, SHA256: b.SHA256, Size: b.Size,
		KeyID: b.KeyID, CreatedBy: b.CreatedBy, CreatedAt: b.CreatedAt.UTC()}
}

// PolicyPushed is the answer of a push: the revision and the sources it
// was built from.
type PolicyPushed struct {
	PolicyRevision
	Files []string `json:"files"`
	Roots []string `json:"roots"`
}

// pushPolicy compiles the sources (a broken policy is a 400 naming the
// file and line), assigns the fleet's next revision, signs the bundle with
// the tenant's key, stores it and notifies the fleet's devices.
func (a *handler) pushPolicy(w http.ResponseWriter, r *http.Request) error {
	if a.policySigner == nil {
		return errorf(http.StatusServiceUnavailable, codeInternal, "policy bundles are not served by this control plane")
	}
	var req PolicyPush
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if len(req.Files) == 0 {
		return badRequest("field \"files\" is required: path → content of the .rego modules and data.json/data.yaml documents")
	}
	files := make(policybundle.Files, len(req.Files))
	for name, content := range req.Files {
		files[name] = []byte(content)
	}
	unsigned, err := policybundle.Build(files)
	if err != nil {
		return policyBuildError(err)
	}
	p, err := caller(r)
	if err != nil {
		return err
	}
	// Outside the transaction: creating the key on the first push is a
	// write of its own, and unsealing reads the tenant's data key.
	key, err := a.policySigner.SigningKey(r.Context(), p.Tenant)
	if err != nil {
		return err
	}
	var out PolicyPushed
	err = a.mutate(r, "policy.push", func(tx *store.Tx, p principal) (change, error) {
		f, err := resolveFleet(r.Context(), tx, p.Tenant, r.PathValue("fleet"))
		if err != nil {
			return change{}, err
		}
		rev, err := tx.NextPolicyRevision(r.Context(), p.Tenant, f.ID)
		if err != nil {
			return change{}, err
		}
		raw, err := policybundle.Sign(unsigned, policybundle.Meta{Tenant: p.Tenant, Fleet: f.ID, Revision: rev, CreatedAt: a.now()}, key)
		if err != nil {
			return change{}, policyBuildError(err)
		}
		stored, err := tx.CreatePolicyBundle(r.Context(), p.Tenant, store.PolicyBundle{
			FleetID: f.ID, Revision: rev, SHA256: policybundle.Digest(raw), KeyID: key.ID, Bundle: raw, CreatedBy: p.ID,
		})
		if err != nil {
			return change{}, err
		}
		out = PolicyPushed{PolicyRevision: NewPolicyRevision(stored), Files: unsigned.Files(), Roots: unsigned.Roots()}
		return change{target: f.ID, details: map[string]any{
			"revision": rev, "sha256": stored.SHA256, "key_id": key.ID, "files": out.Files, "size": stored.Size,
		}}, nil
	})
	if err != nil {
		return err
	}
	if a.policyNotifier != nil {
		a.policyNotifier.NotifyPolicy(context.WithoutCancel(r.Context()), p.Tenant, out.FleetID, out.Revision)
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

// policyBuildError is the 400 for sources that do not build: every
// problem, "file:line:col: code: message", in the message.
func policyBuildError(err error) error {
	var be *policybundle.BuildError
	if !errors.As(err, &be) {
		return err
	}
	parts := make([]string, len(be.Problems))
	for i, p := range be.Problems {
		parts[i] = p.String()
	}
	msg := "the policy does not build: " + strings.Join(parts, "; ")
	if len(msg) > 4000 {
		msg = msg[:4000] + " …"
	}
	return badRequest("%s", msg)
}

// getPolicy answers the fleet's current policy revision.
func (a *handler) getPolicy(w http.ResponseWriter, r *http.Request) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	f, err := resolveFleet(r.Context(), a.store, p.Tenant, r.PathValue("fleet"))
	if err != nil {
		return err
	}
	b, err := a.store.LatestPolicyBundle(r.Context(), p.Tenant, f.ID, false)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, codeNotFound, "fleet %s has no policy bundle: push one with `tgctl policy push --fleet %s DIR`", f.Name, f.Name)
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, NewPolicyRevision(b))
	return nil
}
