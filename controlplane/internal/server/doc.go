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
//	GET  /api/v1/device/packages/{id}      device mTLS → the package file of its tenant (Range: resumable)
//	GET  /api/v1/device/policy             device mTLS → the signed policy bundle of its fleet (ETag, If-None-Match → 304)
//	GET  /api/v1/device/policy/key         device mTLS → wire.PolicyKey, the tenant's policy verification key
//	POST /api/v1/device/key-grants         device mTLS, wire.KeyGrantRequest → wire.KeyGrant or 403 KEY_GRANT_REFUSED
//	PUT  /api/v1/device/kem-key            device mTLS, {"kem_public"} once → Device (409 if another is set)
//	GET  /api/v1/device/jobs               device mTLS → [wire.Job]: its jobs in flight, oldest first
//	GET  /api/v1/device/jobs/{id}          device mTLS → wire.Job; another device's 404, cancelled 410 JOB_CANCELLED
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
// token usable and no half-enrolled device behind. The device's KEM public
// key (package key grants), when the request carries one, is stored with it;
// the verifier has checked that it parses and that the TPM certification
// covers it. A device enrolled without one registers it later, once,
// through PUT /api/v1/device/kem-key ("device.kem_key" audit entry).
//
// Packages (controlplane/internal/registry): a device downloads package
// files of its own tenant with range requests (the transfer may outlast
// the server's 60 s request timeouts while bytes flow), and asks for a
// package's key; the registry decides, the grant is audited as "key.grant"
// (actor device:<id>, target the device, details package_id, job_id,
// fleet_id) in the transaction of its final check, and a refusal is 403
// KEY_GRANT_REFUSED with the reason (also logged). The DEK itself is never
// logged.
//
// Jobs (controlplane/internal/rollout): a device lists its jobs in flight
// and reads one of its own; another device's job, or one not released yet,
// is 404, and a job an operator's abort or rollback cancelled is 410
// JOB_CANCELLED, so the device drops it.
//
// The enrollment session handle given to the device is the verifier's
// session id with an HMAC-SHA256 under TG_SECRET_KEY: forged or altered
// handles are refused before the session store is consulted, and replicas
// that share the secret accept each other's handles.
package server
