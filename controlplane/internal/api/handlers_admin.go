package api

import (
	"net/http"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

// maxAPIKeyLifetime bounds expires_in: a key that outlives its purpose by
// decades is a key nobody remembers to revoke.
const maxAPIKeyLifetime = 5 * 365 * 24 * time.Hour

func (a *handler) getOpenAPI(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(a.openapi)
	return nil
}

func (a *handler) whoami(w http.ResponseWriter, r *http.Request) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, Whoami{Tenant: p.Tenant, OperatorID: p.OperatorID, KeyID: p.ID, Role: string(p.Role)})
	return nil
}

func (a *handler) getCA(w http.ResponseWriter, r *http.Request) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	tenantPEM, err := a.ca.TenantCAPEM(r.Context(), p.Tenant)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, CAInfo{PlatformCAPEM: string(a.ca.PlatformCAPEM()), TenantCAPEM: string(tenantPEM), CAHash: a.ca.CAHash()})
	return nil
}

// Operators.

func (a *handler) listOperators(w http.ResponseWriter, r *http.Request) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	ops, err := a.store.ListOperators(r.Context(), p.Tenant)
	if err != nil {
		return err
	}
	out := make([]Operator, 0, len(ops))
	for _, o := range ops {
		out = append(out, NewOperator(o))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *handler) getOperator(w http.ResponseWriter, r *http.Request) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	o, err := a.store.GetOperator(r.Context(), p.Tenant, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, NewOperator(o))
	return nil
}

func (a *handler) createOperator(w http.ResponseWriter, r *http.Request) error {
	var req OperatorCreate
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if err := validateOperatorName(req.Name); err != nil {
		return err
	}
	role, err := parseRole("role", req.Role)
	if err != nil {
		return err
	}
	var out store.Operator
	err = a.mutate(r, "operator.create", func(tx *store.Tx, p principal) (change, error) {
		o, err := tx.CreateOperator(r.Context(), p.Tenant, store.Operator{Name: req.Name, Role: role})
		if err != nil {
			return change{}, onConflict(err, "operator name %q is taken", req.Name)
		}
		out = o
		return change{target: o.ID, details: map[string]any{"name": o.Name, "role": o.Role}}, nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, NewOperator(out))
	return nil
}

func (a *handler) patchOperator(w http.ResponseWriter, r *http.Request) error {
	var req OperatorPatch
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	var u store.OperatorUpdate
	details := map[string]any{}
	if req.Role != nil {
		role, err := parseRole("role", *req.Role)
		if err != nil {
			return err
		}
		u.Role, details["role"] = &role, role
	}
	if req.Disabled != nil {
		u.Disabled, details["disabled"] = req.Disabled, *req.Disabled
	}
	if len(details) == 0 {
		return badRequest("nothing to change: set \"role\" or \"disabled\"")
	}
	id := r.PathValue("id")
	var out store.Operator
	err := a.mutate(r, "operator.update", func(tx *store.Tx, p principal) (change, error) {
		o, err := tx.UpdateOperator(r.Context(), p.Tenant, id, u)
		if err != nil {
			return change{}, err
		}
		if err := keepsAnAdmin(r, tx, p.Tenant); err != nil {
			return change{}, err
		}
		out = o
		return change{target: o.ID, details: details}, nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, NewOperator(out))
	return nil
}

func (a *handler) deleteOperator(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	err := a.mutate(r, "operator.delete", func(tx *store.Tx, p principal) (change, error) {
		o, err := tx.GetOperator(r.Context(), p.Tenant, id)
		if err != nil {
			return change{}, err
		}
		if err := tx.DeleteOperator(r.Context(), p.Tenant, id); err != nil {
			return change{}, err
		}
		if err := keepsAnAdmin(r, tx, p.Tenant); err != nil {
			return change{}, err
		}
		return change{target: id, details: map[string]any{"name": o.Name}}, nil
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// keepsAnAdmin refuses a change that would leave the tenant without an
// enabled admin: nobody could manage its operators and keys any more.
func keepsAnAdmin(r *http.Request, tx *store.Tx, tenant string) error {
	ops, err := tx.ListOperators(r.Context(), tenant)
	if err != nil {
		return err
	}
	for _, o := range ops {
		if o.Role == store.RoleAdmin && !o.Disabled {
			return nil
		}
	}
	return errorf(http.StatusConflict, codeConflict, "refused: the tenant must keep at least one enabled admin")
}

// API keys.

func (a *handler) listAPIKeys(w http.ResponseWriter, r *http.Request) error {
	p, err := caller(r)
	if err != nil {
		return err
	}
	keys, err := a.store.ListAPIKeys(r.Context(), p.Tenant, "")
	if err != nil {
		return err
	}
	out := make([]APIKey, 0, len(keys))
	for _, k := range keys {
		out = append(out, NewAPIKey(k))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *handler) createAPIKey(w http.ResponseWriter, r *http.Request) error {
	var req APIKeyCreate
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if err := validateText("name", req.Name); err != nil {
		return err
	}
	role, err := parseRole("role", req.Role)
	if err != nil {
		return err
	}
	p, err := caller(r)
	if err != nil {
		return err
	}
	if !p.Role.AtLeast(role) {
		return errorf(http.StatusForbidden, codeForbidden, "a %s key cannot create a %s key", p.Role, role)
	}
	opID := req.OperatorID
	if opID == "" {
		opID = p.OperatorID
	} else if !store.ValidID(store.PrefixOperator, opID) {
		return badRequest("field \"operator_id\": %q is not an operator id", opID)
	}
	var expires time.Time
	if req.ExpiresIn != "" {
		d, err := durationField("expires_in", req.ExpiresIn, time.Minute, maxAPIKeyLifetime)
		if err != nil {
			return err
		}
		expires = a.now().Add(d)
	}
	var out APIKeyCreated
	err = a.mutate(r, "api_key.create", func(tx *store.Tx, p principal) (change, error) {
		k, secret, err := tx.CreateAPIKey(r.Context(), p.Tenant, store.APIKey{OperatorID: opID, Role: role, Name: req.Name, ExpiresAt: expires})
		if err != nil {
			return change{}, err
		}
		out = APIKeyCreated{APIKey: NewAPIKey(k), Key: secret}
		d := map[string]any{"name": k.Name, "role": k.Role, "operator_id": k.OperatorID, "prefix": k.Prefix}
		if !k.ExpiresAt.IsZero() {
			d["expires_at"] = k.ExpiresAt
		}
		return change{target: k.ID, details: d}, nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out)
	return nil
}

func (a *handler) revokeAPIKey(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	err := a.mutate(r, "api_key.revoke", func(tx *store.Tx, p principal) (change, error) {
		if err := tx.RevokeAPIKey(r.Context(), p.Tenant, id); err != nil {
			return change{}, err
		}
		return change{target: id}, nil
	})
	if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
