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
// The data dir is ./.tg-data in development and /var/lib/tensorguard/controlplane in
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
// CA refresher, broker, presence tracker, attestation, rollouts — in one errgroup: the first error
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
// Revocation: the operator API revokes (or deletes) in the store and calls
// DisconnectDevice, which drops the CA's revocation cache (so the next TLS
// handshake on the API or the broker is refused), closes the device's
// broker connections at once, and overwrites the device's retained status
// with {"state":"offline","revoked":true} and the highest session the
// tracker saw — published as the control plane, in process or over its
// connection to an external broker — so MQTT watchers, also later
// subscribers, stop seeing it online. If the device's Will lands after it,
// the tracker publishes the revoked status again.
//
// Attestation: the attestation service challenges every device with a TPM
// on its fleet's interval (store.FleetAttestation; attestation.interval by
// default) with a database nonce on cmd/attest, verifies the evidence on
// tg/v1/+/devices/+/attestation with internal/attest against the fleet's
// policy, stores the verdict with the quarantine it calls for, appends
// changes to the history, and publishes the verdict, retained, on the
// fleet's attestation topic. Stale and unknown verdicts come from a sweep
// on the same scan. Every stored verdict is published again when the
// service first sees a device and after a reconnect to an external broker.
// With revoke_on_untrusted an untrusted verdict revokes the device as the
// API would, audited with actor "attestation". docs/attestation.md is the
// operator's view.
//
// Packages: the registry (internal/registry) keeps each tenant's pinned
// publishers and its verified packages, stored content-addressed in a
// local blob store under packages.dir (default <data_dir>/packages;
// packages.max_size bounds a push, default 4 GiB), and the tenant's
// control-plane recipient key, sealed under the tenant's data key. The
// operator API pushes, lists and deletes packages; devices download them
// (ranges) and ask for their keys on the device routes, which the registry
// grants to enrolled, trusted devices with a released job of the rollout
// engine, auditing each grant.
//
// Rollouts: the rollout engine (internal/rollout) subscribes in process
// to tg/v1/+/devices/+/jobs/+ (through the presence connection with an
// external broker), applies every job report once, and — on the replica
// that holds its database lease — moves each running rollout through its
// waves: it assigns the fleet's eligible devices, notifies them on
// cmd/job within max_concurrent, retries and times out silent ones,
// starts a wave when the previous met its success threshold, pauses at the
// failure threshold, and publishes events and a retained status on
// tg/v1/<tenant>/rollouts/<id>/. Devices fetch their jobs on
// /api/v1/device/jobs; key grants go through the engine's Authorize.
// docs/rollouts.md is the operator's view.
//
// # External broker
//
// With mqtt.mode external, no broker is started; the control plane connects
// to mqtt.external.url as its own identity (a platform-CA client
// certificate issued at start, CN "controlplane", granted tg/v1/# by the
// ACL) and runs presence tracking over that connection.
//
//	mqtt:
//	  mode: external
//	  external:
//	    url: mqtts://broker.example:8883
//	    mosquitto:                      # optional: manage a mosquitto's files
//	      dir: /etc/mosquitto/tensorguard
//	      pid_file: /run/mosquitto/mosquitto.pid   # SIGHUP; or
//	      # reload_command: [systemctl, reload, mosquitto]
//	      # listen: "0.0.0.0:8883"      # the snippet's listener; default :<url port>
//	      # group: mosquitto            # default when that group exists
//
// `tg-controlplane mosquitto-config --out DIR` (WriteMosquittoConfig) writes
// mosquitto.conf (the snippet), ca.pem (every tenant root and the platform
// root), crl.pem, acl (one "user <CN>" block per enrolled device, enabled
// operator and the control plane), server.crt/server.key (platform CA) and
// a control-plane client identity, and prints the snippet followed by how
// to run it: Debian's service includes /etc/mosquitto/conf.d, so a symlink
// there and a restart; or a main file with pid_file and include_dir DIR.
//
// With mqtt.external.mosquitto set, serve keeps that directory current
// (external_mosquitto.go): at start (before READY; a failure there — a
// directory or group it cannot write, say — stops serve), after every
// enrollment, revocation and deletion, before MQTT credentials are issued,
// after operator changes, and every 30 s (changes made by other replicas or
// by init, CRL refresh, server certificate renewal at two thirds of its
// life). Requests are coalesced (250 ms quiet, at most 1 s), so three
// agents enrolling at once cause one reload. Only files whose bytes, mode
// or group changed are written, each atomically (temporary file with mode
// and group set, fsync, rename), and mosquitto is reloaded only when
// something changed: SIGHUP to the pid in pid_file (absent: mosquitto is
// not running and reads the files when it starts) or reload_command.
//
// Ordering is what makes it safe. An enrollment's response (the device's
// certificate) waits until mosquitto has been told about the new ACL
// block: mosquitto acknowledges a publish the ACL refuses and drops it, so
// a device that connected first would lose its first status and outbox
// entries. A revocation's response waits for the reload and then ends the
// device's connection by taking over its client id (mosquitto keeps a
// revoked client's connection open; the ACL only silences it); the
// device's reconnect then fails the TLS handshake against the CRL.
//
// CRLs in mosquitto 2.0 (Debian 12): crlfile takes one file per listener
// but loads every CRL in it, so crl.pem concatenates one CRL per CA of
// ca.pem. Each CA needs one: with CRL checking on, OpenSSL refuses every
// client whose issuer has no CRL — including the control plane, whose
// certificate the platform CA issues (its CRL is always empty). SIGHUP
// rebuilds the TLS context, so a new CRL (and a new tenant's root) applies
// to the next handshake. A CRL is valid for 7 days and re-signed after one
// day or when its revoked set changes (ca.CRLValidity, ca.CRLRefresh); an
// expired CRL would lock every device of its tenant out.
//
// Permissions: mosquitto 2 reads its files after dropping to user
// mosquitto, also on reload. The directory is created 0750 and every file
// is given to group mosquitto: keys and ACL 0640, certificates, CRL and
// snippet 0644. The control plane must therefore run as root or as a
// member of group mosquitto (usermod -aG mosquitto tensorguard), and, to
// send SIGHUP, as root or mosquitto's user — otherwise use
// reload_command (e.g. a sudo rule for systemctl reload mosquitto).
// mosquitto writes its pid file after dropping privileges too, so its
// directory must be writable by mosquitto (Debian: /run/mosquitto).
//
// Without mqtt.external.mosquitto the broker's authorisation is someone
// else's job: rerun mosquitto-config and reload after each change.
package controlplane
