// Package api is the control plane's operator REST API: everything under
// /api/v1/ in docs/api.md except enrollment (/api/v1/enroll…) and the
// device routes (/api/v1/device/…), which the control-plane core serves
// itself. [New] returns the handler; the core mounts it at "/api/v1/" on
// its own mux, where its more specific patterns take precedence:
//
//	mux.Handle("/api/v1/", api.New(deps))
//	mux.Handle("POST /api/v1/enroll", enrollHandler) // more specific: wins
//
// # What it guarantees
//
//   - Every response carries X-Request-Id, and every error is JSON
//     {"error":{"code","message","request_id"}} with a code of
//     internal/wire — also for unknown routes (404), wrong methods (405,
//     with Allow) and panics (500 INTERNAL, details only in the log).
//   - Operators authenticate with a bearer API key; a missing or bad key is
//     401 UNAUTHENTICATED (with WWW-Authenticate: Bearer) without saying
//     which check failed. The key fixes the tenant: every store call is
//     scoped to it, so another tenant's objects are simply 404.
//   - Each route names the least role it needs (viewer reads, operator
//     mutates fleets, tokens and devices, admin manages operators and API
//     keys); a lower role is 403 FORBIDDEN before the body is read.
//   - Request bodies are JSON objects of at most 1 MiB with
//     Content-Type application/json; unknown fields, trailing data and wrong
//     types are 400 BAD_REQUEST naming the field.
//   - Every mutation and its audit entry commit in one transaction. Entries
//     are hashed with internal/audit.Next, so GET /api/v1/audit returns
//     entries a client can verify with internal/audit.Verify. Secrets (API
//     keys, enrollment tokens) are returned once and never logged or
//     audited; the access log never contains the Authorization header.
//
// The OpenAPI 3.1 document (GET /api/v1/openapi.json) is written out in
// openapi.go, separately from the route table in routes.go; a test checks
// that the two name exactly the same routes, counting the core's routes
// (see [ExternalRoutes]), and that the responses of the happy-path tests
// match the documented schemas.
package api
