// Package server is the control plane's one HTTP(S) listener (docs/api.md):
// it tells TLS from plain HTTP by the first byte of each connection, serves
// health, enrollment and device routes itself, and mounts the operator API
// (controlplane/internal/api) for the rest of /api/v1/.
//
// # Listener
//
// A connection whose first byte is a TLS handshake record (0x16) gets TLS:
// the platform CA's server certificate, client certificates requested but
// optional (tls.VerifyClientCertIfGiven against every tenant root), and a
// VerifyConnection step (ca.Authority.VerifyClient) that refuses, during
// the handshake, a revoked, unknown, expired or cross-tenant client
// certificate. Anything else is plain HTTP, served only to loopback peers
// and only when the configuration allows it (development); otherwise the
// peer gets a short plain-text 403 and the connection is closed.
//
// # Routes
//
//	GET  /healthz, /readyz                 liveness; readiness checks the database and the broker
//	POST /api/v1/enroll                    token → 200 Challenge (TPM) or 201 EnrollResponse (no TPM)
//	POST /api/v1/enroll/activate           credential secret → 201 EnrollResponse
//	POST /api/v1/device/renew              device mTLS, CSR for the same key → 200 EnrollResponse
//	GET  /api/v1/device/self               device mTLS → Device
//
// Bodies are JSON of at most 1 MiB with no unknown fields and no trailing
// data; every response carries X-Request-Id and every error has the
// {"error":{code,message,request_id}} shape of internal/wire.
//
// Enrollment checks the token without consuming it, then the TPM kind
// against the server-wide list and the fleet's policy (hardware always;
// swtpm and simulated with allow_simulated_tpm; none with allow_no_tpm), then
// the TPM evidence (enroll.Verifier). Activation consumes the token, creates
// the device, issues and records its certificate and appends the
// "device.enroll" audit entry in one transaction, so a failure leaves the
// token usable and no half-enrolled device behind.
//
// The enrollment session handle given to the device is the verifier's
// session id with an HMAC-SHA256 under TG_SECRET_KEY: forged or altered
// handles are refused before the session store is consulted, and replicas
// that share the secret accept each other's handles.
package server
