package api

import (
	"net/http"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/store"
)

// route is one row of the route table: New registers exactly these.
type route struct {
	Method string
	Path   string     // a ServeMux path pattern; also the OpenAPI path
	Role   store.Role // least role; "" means no authentication
	handle handlerFunc
}

// routes is the single route table of this package.
func (a *handler) routes() []route {
	const (
		none     = store.Role("")
		viewer   = store.RoleViewer
		operator = store.RoleOperator
		admin    = store.RoleAdmin
	)
	return []route{
		{http.MethodGet, "/api/v1/openapi.json", none, a.getOpenAPI},
		{http.MethodGet, "/api/v1/whoami", viewer, a.whoami},
		{http.MethodGet, "/api/v1/ca", viewer, a.getCA},

		{http.MethodGet, "/api/v1/operators", admin, a.listOperators},
		{http.MethodPost, "/api/v1/operators", admin, a.createOperator},
		{http.MethodGet, "/api/v1/operators/{id}", admin, a.getOperator},
		{http.MethodPatch, "/api/v1/operators/{id}", admin, a.patchOperator},
		{http.MethodDelete, "/api/v1/operators/{id}", admin, a.deleteOperator},

		{http.MethodGet, "/api/v1/api-keys", admin, a.listAPIKeys},
		{http.MethodPost, "/api/v1/api-keys", admin, a.createAPIKey},
		{http.MethodDelete, "/api/v1/api-keys/{id}", admin, a.revokeAPIKey},

		{http.MethodGet, "/api/v1/fleets", viewer, a.listFleets},
		{http.MethodPost, "/api/v1/fleets", operator, a.createFleet},
		{http.MethodGet, "/api/v1/fleets/{fleet}", viewer, a.getFleet},
		{http.MethodPatch, "/api/v1/fleets/{fleet}", operator, a.patchFleet},
		{http.MethodDelete, "/api/v1/fleets/{fleet}", operator, a.deleteFleet},

		{http.MethodPost, "/api/v1/fleets/{fleet}/enrollment-tokens", operator, a.createToken},
		{http.MethodGet, "/api/v1/fleets/{fleet}/enrollment-tokens", viewer, a.listTokens},
		{http.MethodDelete, "/api/v1/enrollment-tokens/{id}", operator, a.deleteToken},

		{http.MethodPost, "/api/v1/fleets/{fleet}/policy", operator, a.pushPolicy},
		{http.MethodGet, "/api/v1/fleets/{fleet}/policy", viewer, a.getPolicy},

		{http.MethodGet, "/api/v1/devices", viewer, a.listDevices},
		{http.MethodGet, "/api/v1/devices/{id}", viewer, a.getDevice},
		{http.MethodPatch, "/api/v1/devices/{id}", operator, a.patchDevice},
		{http.MethodDelete, "/api/v1/devices/{id}", operator, a.deleteDevice},
		{http.MethodPost, "/api/v1/devices/{id}/revoke", operator, a.revokeDevice},
		{http.MethodPost, "/api/v1/devices/{id}/attest", operator, a.attestDevice},
		{http.MethodGet, "/api/v1/devices/{id}/attestations", viewer, a.listAttestations},

		{http.MethodGet, "/api/v1/publishers", viewer, a.listPublishers},
		{http.MethodPost, "/api/v1/publishers", operator, a.createPublisher},
		{http.MethodGet, "/api/v1/publishers/{publisher}", viewer, a.getPublisher},
		{http.MethodDelete, "/api/v1/publishers/{publisher}", operator, a.deletePublisher},

		{http.MethodGet, "/api/v1/packages", viewer, a.listPackages},
		{http.MethodPost, "/api/v1/packages", operator, a.pushPackage},
		{http.MethodGet, "/api/v1/packages/recipient", viewer, a.getRecipient},
		{http.MethodGet, "/api/v1/packages/{package}", viewer, a.getPackage},
		{http.MethodDelete, "/api/v1/packages/{package}", operator, a.deletePackage},
		{http.MethodGet, "/api/v1/packages/{package}/blob", viewer, a.downloadPackage},

		{http.MethodGet, "/api/v1/rollouts", viewer, a.listRollouts},
		{http.MethodPost, "/api/v1/rollouts", operator, a.createRollout},
		{http.MethodGet, "/api/v1/rollouts/{id}", viewer, a.getRollout},
		{http.MethodPost, "/api/v1/rollouts/{id}/pause", operator, a.pauseRollout},
		{http.MethodPost, "/api/v1/rollouts/{id}/resume", operator, a.resumeRollout},
		{http.MethodPost, "/api/v1/rollouts/{id}/abort", operator, a.abortRollout},
		{http.MethodPost, "/api/v1/rollouts/{id}/rollback", operator, a.rollbackRollout},

		{http.MethodGet, "/api/v1/audit", viewer, a.listAudit},
		{http.MethodPost, "/api/v1/mqtt/credentials", viewer, a.mqttCredentials},
	}
}

// Route describes one route: its method, path pattern and least role ("" for
// none; for the core's routes, the credential it takes instead).
type Route struct {
	Method string
	Path   string
	Role   string
}

// Routes lists the routes New serves, in the order of the route table.
func Routes() []Route {
	var out []Route
	for _, rt := range (&handler{}).routes() {
		out = append(out, Route{Method: rt.Method, Path: rt.Path, Role: string(rt.Role)})
	}
	return out
}

// ExternalRoutes lists the routes of docs/api.md that the control-plane
// core serves itself; the OpenAPI document describes them too.
func ExternalRoutes() []Route {
	return []Route{
		{http.MethodGet, "/healthz", ""},
		{http.MethodGet, "/readyz", ""},
		{http.MethodPost, "/api/v1/enroll", "token"},
		{http.MethodPost, "/api/v1/enroll/activate", "session"},
		{http.MethodPost, "/api/v1/device/renew", "device mTLS"},
		{http.MethodGet, "/api/v1/device/self", "device mTLS"},
		{http.MethodGet, "/api/v1/device/policy", "device mTLS"},
		{http.MethodGet, "/api/v1/device/policy/key", "device mTLS"},
		{http.MethodGet, "/api/v1/device/packages/{id}", "device mTLS"},
		{http.MethodPost, "/api/v1/device/key-grants", "device mTLS"},
		{http.MethodPut, "/api/v1/device/kem-key", "device mTLS"},
		{http.MethodGet, "/api/v1/device/jobs", "device mTLS"},
		{http.MethodGet, "/api/v1/device/jobs/{id}", "device mTLS"},
	}
}
