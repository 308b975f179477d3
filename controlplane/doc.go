// Package controlplane assembles one control-plane node (tg-controlplane
// serve): the HTTP(S) API with enrollment (internal/server, mounting the
// operator API of internal/api), the platform and tenant CAs (internal/ca),
// the embedded MQTT broker (internal/broker) and the presence tracker, over
// the database of internal/store and the KEK of internal/kek.
//
// # Configuration
//
// Config is read with precedence defaults < YAML file (LoadConfig; version: 1,
// unknown keys are errors) < environment < flags (applied by the caller),
// then Finish fills the defaults and Validate checks it, as its own step:
//
//	TG_ENVIRONMENT  development (default) | production
//	DATABASE_URL    default sqlite://<data_dir>/controlplane.db
//	TG_KEY_MASTER   the KEK (32 bytes hex/base64); when set it is the KEK source
//	TG_SECRET_KEY   see below
//
// The data dir is ./.tg-data in development and /var/lib/tensorguard in
// production (--data-dir). It holds the SQLite database, the platform CA
// files (see internal/ca) and, in development, the KEK file kek.key that
// init generates (kek.GenerateKeyFile, marked as a development key).
//
// With TG_ENVIRONMENT=production, Validate refuses, naming the setting:
// plain HTTP (http.allow_plain_loopback), a plain-TCP MQTT listener
// (mqtt.insecure_dev_listen), software TPMs in enrollment.allowed_tpm_kinds
// (swtpm, simulated), hardware enrollment without enrollment.ek_roots, and a
// missing or short TG_SECRET_KEY; New and Init refuse a KEK that is not
// production-ready (a generated development key or an in-memory key).
//
// # TG_SECRET_KEY
//
// At least 32 bytes; required in production. It is the HMAC-SHA256 key that
// authenticates enrollment session handles: the session id returned with the
// TPM challenge carries a MAC, so /api/v1/enroll/activate refuses forged or
// altered handles before touching the session store, and replicas sharing
// the secret accept each other's handles. In development an unset key is
// replaced by a random per-process one (pending enrollments do not survive a
// restart, which they would not anyway: sessions are in memory). It is not
// an encryption key: data at rest is protected by the KEK.
//
// # Running
//
// New opens everything and binds nothing; Run runs the tasks — HTTP server,
// CA refresher, broker, presence tracker — in one errgroup: the first error
// cancels the rest, a panic in a task becomes its error, Ready (and systemd's
// READY=1) comes only when every listener accepts connections, and when the
// context ends (SIGTERM) the HTTP server drains within shutdown_timeout and
// STOPPING=1 is sent.
//
// Presence: the tracker subscribes in process to
// tg/v1/+/devices/+/status, applies wire.LatestStatus per device (a status
// from an older session is stale; within a session offline is final) and
// records online and last-seen with store.SetDevicePresence.
//
// Revocation: the operator API revokes in the store and calls
// DisconnectDevice, which drops the CA's revocation cache (so the next TLS
// handshake on the API or the broker is refused) and closes the device's
// broker connections at once.
//
// # External broker
//
// With mqtt.mode external, no broker is started; `tg-controlplane
// mosquitto-config --out DIR` (WriteMosquittoConfig) writes the CA bundle
// (tenant roots and the platform root), a server certificate, the ACL (one
// block per enrolled device, enabled operator and the control plane) and the
// control plane's client identity, and prints the mosquitto.conf snippet.
// Rerun it and SIGHUP mosquitto after enrollments and revocations.
package controlplane
