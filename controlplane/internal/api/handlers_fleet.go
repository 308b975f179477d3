package api

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/attest"
	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

// fleetReader is what *store.Store and *store.Tx share for finding fleets.
type fleetReader interface {
	GetFleet(ctx context.Context, tenant, id string) (store.Fleet, error)
	GetFleetByName(ctx context.Context, tenant, name string) (store.Fleet, error)
}

var (
	_ fleetReader = (*store.Store)(nil)
	_ fleetReader = (*store.Tx)(nil)
)

// resolveFleet finds a fleet by id or, failing that form, by name.
func resolveFleet(ctx context.Context, s fleetReader, tenant, ref string) (store.Fleet, error) {
	var f store.Fleet
	var err error
	if store.ValidID(store.PrefixFleet, ref) {
		f, err = s.GetFleet(ctx, tenant, ref)
	} else {
		f, err = s.GetFleetByName(ctx, tenant, ref)
	}
	if errors.Is(err, store.ErrNotFound) {
		return store.Fleet{}, errorf(http.StatusNotFound, codeNotFound, "fleet %q not found", ref)
	}
	return f, err
}

// applyPolicy returns base with the fields of patch that are set, checked.
func applyPolicy(base store.FleetPolicy, patch *FleetPolicyPatch) (store.FleetPolicy, error) {
	if patch == nil {
		return base, nil
	}
	if patch.AllowNoTPM != nil {
		base.AllowNoTPM = *patch.AllowNoTPM
	}
	if patch.AllowSimulatedTPM != nil {
		base.AllowSimulatedTPM = *patch.AllowSimulatedTPM
	}
	if patch.CertTTL != nil {
		d, err := durationField("policy.cert_ttl", *patch.CertTTL, MinCertTTL, MaxCertTTL)
		if err != nil {
			return store.FleetPolicy{}, err
		}
		base.CertTTL = store.Duration(d)
	}
	if a := patch.Attestation; a != nil {
		att := base.Attestation
		if a.Interval != nil {
			att.Interval = 0
			if *a.Interval != "" {
				d, err := durationField("policy.attestation.interval", *a.Interval, MinAttestationInterval, MaxAttestationInterval)
				if err != nil {
					return store.FleetPolicy{}, err
				}
				att.Interval = store.Duration(d)
			}
		}
		if a.PCRs != nil {
			att.PCRs = slices.Clone(*a.PCRs)
		}
		if a.Rules != nil {
			att.Rules = nil
			for i, r := range *a.Rules {
				if att.Rules == nil {
					att.Rules = map[int]attest.PCRRule{}
				}
				att.Rules[i] = attest.PCRRule{Mode: r.Mode, Allow: slices.Clone(r.Allow)}
			}
		}
		if a.AllowedKinds != nil {
			att.AllowedKinds = slices.Clone(*a.AllowedKinds)
		}
		if a.RevokeOnUntrusted != nil {
			att.RevokeOnUntrusted = *a.RevokeOnUntrusted
		}
		base.Attestation = att
	}
	if err := base.VerifierPolicy().Validate(); err != nil {
		return store.FleetPolicy{}, badRequest("field \"policy.attestation\": %v", err)
	}
	return base, nil
}

func policyDetails(p store.FleetPolicy) map[string]any {
	ttl := time.Duration(p.CertTTL)
	if ttl == 0 {
		ttl = DefaultCertTTL
	}
	return map[string]any{"allow_no_tpm": p.AllowNoTPM, "allow_simulated_tpm": p.AllowSimulatedTPM, "cert_ttl": FormatDuration(ttl),
		"attestation": newFleetAttestation(p)}
}

func (a *handler) listFleets(w http.ResponseWriter, r *http.Request) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	fleets, err := a.store.ListFleets(r.Context(), p.Tenant)
	if err != nil {
		return err
	}
	out := make([]Fleet, 0, len(fleets))
	for _, f := range fleets {
		out = append(out, NewFleet(f))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *handler) getFleet(w http.ResponseWriter, r *http.Request) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	f, err := resolveFleet(r.Context(), a.store, p.Tenant, r.PathValue("fleet"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, NewFleet(f))
	return nil
}

func (a *handler) createFleet(w http.ResponseWriter, r *http.Request) error {
	var req FleetCreate
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if err := validateFleetName(req.Name); err != nil {
		return err
	}
	policy, err := applyPolicy(store.FleetPolicy{CertTTL: store.Duration(DefaultCertTTL)}, req.Policy)
	if err != nil {
		return err
	}
	var out store.Fleet
	err = a.mutate(r, "fleet.create", func(tx *store.Tx, p principal) (change, error) {
		f, err := tx.CreateFleet(r.Context(), p.Tenant, store.Fleet{Name: req.Name, Policy: policy})
		if err != nil {
			return change{}, onConflict(err, "fleet name %q is taken", req.Name)
		}
		out = f
		return change{target: f.ID, details: map[string]any{"name": f.Name, "policy": policyDetails(f.Policy)}}, nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, NewFleet(out))
	return nil
}

func (a *handler) patchFleet(w http.ResponseWriter, r *http.Request) error {
	var req FleetPatch
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if req.Policy == nil {
		return badRequest("field \"policy\" is required")
	}
	// Check the patch before the transaction, so a bad value is a 400
	// whatever the fleet.
	if _, err := applyPolicy(store.FleetPolicy{}, req.Policy); err != nil {
		return err
	}
	var out store.Fleet
	err := a.mutate(r, "fleet.update", func(tx *store.Tx, p principal) (change, error) {
		f, err := resolveFleet(r.Context(), tx, p.Tenant, r.PathValue("fleet"))
		if err != nil {
			return change{}, err
		}
		policy, err := applyPolicy(f.Policy, req.Policy)
		if err != nil {
			return change{}, err
		}
		if out, err = tx.UpdateFleet(r.Context(), p.Tenant, f.ID, store.FleetUpdate{Policy: &policy}); err != nil {
			return change{}, err
		}
		return change{target: f.ID, details: map[string]any{"policy": policyDetails(policy)}}, nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, NewFleet(out))
	return nil
}

func (a *handler) deleteFleet(w http.ResponseWriter, r *http.Request) error {
	err := a.mutate(r, "fleet.delete", func(tx *store.Tx, p principal) (change, error) {
		f, err := resolveFleet(r.Context(), tx, p.Tenant, r.PathValue("fleet"))
		if err != nil {
			return change{}, err
		}
		if err := tx.DeleteFleet(r.Context(), p.Tenant, f.ID); err != nil {
			return change{}, onConflict(err, "fleet %s still has devices (delete them first) or rollouts (which keep it)", f.ID)
		}
		return change{target: f.ID, details: map[string]any{"name": f.Name}}, nil
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Enrollment tokens.

func (a *handler) createToken(w http.ResponseWriter, r *http.Request) error {
	var req EnrollmentTokenCreate
	if err := decodeOptionalBody(r, &req); err != nil {
		return err
	}
	ttl := DefaultTokenTTL
	if req.TTL != "" {
		var err error
		if ttl, err = durationField("ttl", req.TTL, MinTokenTTL, MaxTokenTTL); err != nil {
			return err
		}
	}
	var out EnrollmentTokenCreated
	err := a.mutate(r, "enrollment_token.create", func(tx *store.Tx, p principal) (change, error) {
		f, err := resolveFleet(r.Context(), tx, p.Tenant, r.PathValue("fleet"))
		if err != nil {
			return change{}, err
		}
		t, secret, err := tx.CreateEnrollmentToken(r.Context(), p.Tenant, store.EnrollmentToken{
			FleetID: f.ID, CreatedBy: p.OperatorID, ExpiresAt: a.now().Add(ttl),
		})
		if err != nil {
			return change{}, err
		}
		out = EnrollmentTokenCreated{ID: t.ID, Token: secret, FleetID: f.ID, ExpiresAt: t.ExpiresAt, CAHash: a.ca.CAHash()}
		return change{target: t.ID, details: map[string]any{"fleet_id": f.ID, "expires_at": t.ExpiresAt}}, nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (a *handler) listTokens(w http.ResponseWriter, r *http.Request) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	f, err := resolveFleet(r.Context(), a.store, p.Tenant, r.PathValue("fleet"))
	if err != nil {
		return err
	}
	toks, err := a.store.ListEnrollmentTokens(r.Context(), p.Tenant, f.ID)
	if err != nil {
		return err
	}
	now := a.now()
	out := make([]EnrollmentToken, 0, len(toks))
	for _, t := range toks {
		out = append(out, NewEnrollmentToken(t, now))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *handler) deleteToken(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	err := a.mutate(r, "enrollment_token.delete", func(tx *store.Tx, p principal) (change, error) {
		t, err := tx.GetEnrollmentToken(r.Context(), p.Tenant, id)
		if err != nil {
			return change{}, err
		}
		if err := tx.DeleteEnrollmentToken(r.Context(), p.Tenant, id); err != nil {
			return change{}, err
		}
		return change{target: id, details: map[string]any{"fleet_id": t.FleetID}}, nil
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
