package api

import (
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// The OpenAPI 3.1 document of docs/api.md, written out here on purpose
// rather than generated from the route table: a test compares the two, so
// a route added to one and not the other fails the build.

type obj = map[string]any

func ref(name string) obj { return obj{"$ref": "#/components/schemas/" + name} }

func str(desc string) obj { return obj{"type": "string", "description": desc} }

func nullable(typ, format, desc string) obj {
	o := obj{"type": []any{typ, "null"}, "description": desc}
	if format != "" {
		o["format"] = format
	}
	return o
}

func dateTime(desc string) obj {
	return obj{"type": "string", "format": "date-time", "description": desc}
}

func boolean(desc string) obj { return obj{"type": "boolean", "description": desc} }

func b64(desc string) obj {
	return obj{"type": "string", "contentEncoding": "base64", "description": desc}
}

func enum(desc string, values ...string) obj {
	vs := make([]any, len(values))
	for i, v := range values {
		vs[i] = v
	}
	return obj{"type": "string", "enum": vs, "description": desc}
}

func arrayOf(items obj) obj { return obj{"type": "array", "items": items} }

// object is a closed object schema: every property listed, the required
// ones named, nothing else allowed.
func object(desc string, required []string, props obj) obj {
	req := make([]any, len(required))
	for i, r := range required {
		req[i] = r
	}
	o := obj{"type": "object", "properties": props, "additionalProperties": false, "required": req}
	if desc != "" {
		o["description"] = desc
	}
	return o
}

func roleSchema(desc string) obj { return enum(desc, "admin", "operator", "viewer") }

// Package objects.
var (
	packageFields = []string{"id", "name", "version", "signed_id", "size", "publisher_key_id", "expires_at", "created_at"}
	packageProps  = obj{
		"id":               str("lowercase hex SHA-256 of the .tgsp file"),
		"name":             str("from the signed manifest"),
		"version":          str("semantic version, from the signed manifest"),
		"signed_id":        str("TGSP package id: SHA-256 of header and manifest"),
		"size":             obj{"type": "integer", "minimum": 1, "description": "bytes"},
		"publisher_key_id": str("key id of the publisher that signed it"),
		"expires_at":       dateTime("the signed expiry"),
		"created_at":       dateTime("when it was pushed"),
	}
	packageDetailProps = func() obj {
		o := obj{
			"manifest": obj{"type": "object", "description": "the signed TGSP manifest"},
			"dp_cert":  obj{"type": []any{"object", "null"}, "description": "dp_cert.json: the (ε, δ) the model was trained under; null if absent"},
			"evidence": obj{"type": []any{"object", "null"}, "description": "evidence.json; null if absent"},
		}
		for k, v := range packageProps {
			o[k] = v
		}
		return o
	}()
)

// Policy revision objects.
var (
	policyRevisionFields = []string{"fleet_id", "revision", "sha256", "size", "key_id", "created_by", "created_at"}
	policyRevisionProps  = obj{
		"fleet_id":   str("flt-…"),
		"revision":   obj{"type": "integer", "minimum": 1, "description": "1, 2, 3, … per fleet; the signed manifest's revision"},
		"sha256":     str("lowercase hex SHA-256 of the signed bundle"),
		"size":       obj{"type": "integer", "minimum": 1, "description": "bytes of the signed bundle"},
		"key_id":     str("the tenant policy key that signed it"),
		"created_by": str("key-… of the API key that pushed it"),
		"created_at": dateTime(""),
	}
	policyPushedProps = func() obj {
		o := obj{
			"files": arrayOf(str("source path")),
			"roots": arrayOf(str("manifest root: a package's or top-level data key's first segment")),
		}
		for k, v := range policyRevisionProps {
			o[k] = v
		}
		return o
	}()
)

// Operations whose request or response body is a package file, not JSON.
var (
	binaryRequest  = map[string]bool{"pushPackage": true}
	binaryResponse = map[string]bool{"downloadPackage": true, "devicePackage": true}
)

func schemas() obj {
	policy := obj{
		"allow_no_tpm":        boolean("devices without a TPM may enroll (they are marked tpm_kind none)"),
		"allow_simulated_tpm": boolean("software TPMs (swtpm, the simulator) may enroll: development and tests only"),
		"cert_ttl":            str("device certificate lifetime, 1h to 90d (Go duration, or whole days as \"90d\"); default 24h"),
	}
	pcrRule := object("", []string{"mode"}, obj{
		"mode":  enum("golden: the PCR must equal one of allow; baseline: the value recorded at the device's first trusted quote", "golden", "baseline"),
		"allow": arrayOf(str("hex SHA-256 digest")),
	})
	attestation := obj{
		"interval": str("challenge interval, 1s to 24h, jittered ±10 %; \"\" is the control plane's attestation.interval (default 1m)"),
		"pcrs":     arrayOf(obj{"type": "integer", "minimum": 0, "maximum": 23, "description": "SHA-256 PCR index"}),
		"rules": obj{"type": "object", "description": "rule per PCR index (\"7\"); a selected PCR without one is checked against the baseline",
			"additionalProperties": pcrRule},
		"allowed_kinds":       arrayOf(enum("TPM kinds that can be trusted; default hardware, plus swtpm and simulated when allow_simulated_tpm", "hardware", "swtpm", "simulated")),
		"revoke_on_untrusted": boolean("revoke the device (certificates, broker session) when its verdict turns untrusted; stale devices are only quarantined"),
	}
	policyShown := obj{"attestation": object("", []string{"interval", "pcrs", "allowed_kinds", "revoke_on_untrusted"}, attestation)}
	policyPatch := obj{"attestation": object("absent fields keep their value; an empty interval, pcrs or allowed_kinds restores the default; rules replace all rules", []string{}, attestation)}
	for k, v := range policy {
		policyShown[k], policyPatch[k] = v, v
	}
	apiKeyProps := obj{
		"id":           str("key-…"),
		"name":         str(""),
		"role":         roleSchema("the key's role; its effective role is the lower of this and its operator's"),
		"operator_id":  str("op-…"),
		"prefix":       str("the start of the key, safe to display"),
		"created_at":   dateTime(""),
		"last_used_at": nullable("string", "date-time", "null: never used"),
		"expires_at":   nullable("string", "date-time", "null: never expires"),
		"revoked_at":   nullable("string", "date-time", "null: not revoked"),
	}
	apiKeyCreated := obj{"key": str("tgk_<key id>_<secret>: shown only in this response")}
	for k, v := range apiKeyProps {
		apiKeyCreated[k] = v
	}
	keyFields := []string{"id", "name", "role", "operator_id", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at"}
	codes := []string{wire.CodeBadRequest, wire.CodeUnauthenticated, wire.CodeForbidden, wire.CodeNotFound, wire.CodeConflict,
		wire.CodeTokenUsed, wire.CodeTokenExpired, wire.CodeEnrollRefused, wire.CodeRevoked, wire.CodeTooLarge,
		wire.CodeUnsupported, wire.CodeMethod, wire.CodeInternal,
		wire.CodeInvalidPackage, wire.CodeUnknownPublisher, wire.CodeNotARecipient, wire.CodePackageExpired, wire.CodeKeyGrantRefused,
		wire.CodeJobCancelled}

	return obj{
		"Error": object("every error response", []string{"error"}, obj{
			"error": object("", []string{"code", "message", "request_id"}, obj{
				"code":       enum("stable, machine-readable", codes...),
				"message":    str("for people; may change"),
				"request_id": str("the X-Request-Id of the request"),
			}),
		}),
		"Status": object("", []string{"status"}, obj{"status": str("\"ok\"")}),
		"Whoami": object("the caller", []string{"tenant", "operator_id", "key_id", "role"}, obj{
			"tenant": str("tenant id"), "operator_id": str("op-…"), "key_id": str("key-…"),
			"role": roleSchema("effective role"),
		}),
		"CAInfo": object("", []string{"platform_ca_pem", "tenant_ca_pem", "ca_hash"}, obj{
			"platform_ca_pem": str("the platform CA (server certificates of the API and the broker), PEM"),
			"tenant_ca_pem":   str("the tenant's CA (device and operator certificates), PEM"),
			"ca_hash":         str("sha256:<hex> of the platform CA certificate's DER"),
		}),
		"Operator": object("", []string{"id", "name", "role", "disabled", "created_at"}, obj{
			"id": str("op-…"), "name": str(""), "role": roleSchema(""), "disabled": boolean(""), "created_at": dateTime(""),
		}),
		"OperatorCreate": object("", []string{"name", "role"}, obj{
			"name": str("1 to 128 of [A-Za-z0-9._@+-], unique in the tenant"), "role": roleSchema(""),
		}),
		"OperatorPatch": object("at least one field; refused (409) if no enabled admin would remain", []string{}, obj{
			"role": roleSchema(""), "disabled": boolean("a disabled operator's keys stop working at once"),
		}),
		"APIKey":        object("never the secret", keyFields, apiKeyProps),
		"APIKeyCreated": object("", append([]string{"key"}, keyFields...), apiKeyCreated),
		"APIKeyCreate": object("", []string{"name", "role"}, obj{
			"name":        str("1 to 128 printable characters"),
			"role":        roleSchema("at most the caller's role and the operator's role"),
			"operator_id": str("default: the caller's operator"),
			"expires_in":  str("lifetime, 1m to 5 years (\"720h\", \"90d\"); absent: never expires"),
		}),
		"FleetPolicy":      object("", []string{"allow_no_tpm", "allow_simulated_tpm", "cert_ttl", "attestation"}, policyShown),
		"FleetPolicyPatch": object("absent fields keep their value (on create: the default)", []string{}, policyPatch),
		"Fleet": object("", []string{"id", "name", "policy", "created_at"}, obj{
			"id": str("flt-…"), "name": str(""), "policy": ref("FleetPolicy"), "created_at": dateTime(""),
		}),
		"FleetCreate": object("", []string{"name"}, obj{
			"name":   str("1 to 63 of [A-Za-z0-9._-], unique in the tenant, not of the form flt-…"),
			"policy": ref("FleetPolicyPatch"),
		}),
		"FleetPatch": object("", []string{"policy"}, obj{"policy": ref("FleetPolicyPatch")}),
		"EnrollmentTokenCreate": object("", []string{}, obj{
			"ttl": str("1m to 7d, default 1h"),
		}),
		"EnrollmentTokenCreated": object("", []string{"id", "token", "fleet_id", "expires_at", "ca_hash"}, obj{
			"id": str("tok-…"), "token": str("tgt_<token id>_<secret>: shown only in this response"),
			"fleet_id": str("flt-…"), "expires_at": dateTime(""),
			"ca_hash": str("sha256:<hex> pin of the platform CA, for the agent"),
		}),
		"EnrollmentToken": object("never the secret", []string{"id", "fleet_id", "created_by", "created_at", "expires_at", "used_at", "used_by_device", "state"}, obj{
			"id": str("tok-…"), "fleet_id": str("flt-…"), "created_by": str("op-…"),
			"created_at": dateTime(""), "expires_at": dateTime(""),
			"used_at":        nullable("string", "date-time", "null: unused"),
			"used_by_device": nullable("string", "", "dev-… that consumed it"),
			"state":          enum("", "active", "used", "expired"),
		}),
		"Device": object("", []string{"id", "fleet_id", "name", "labels", "device_type", "tpm_kind", "ek_fingerprint",
			"cert_serial", "cert_not_after", "status", "online", "quarantined", "kem_key", "last_seen_at", "created_at"}, obj{
			"id": str("dev-…"), "fleet_id": str("flt-…"), "name": str(""),
			"labels":         obj{"type": "object", "additionalProperties": obj{"type": "string"}},
			"device_type":    str("e.g. jetson-orin"),
			"tpm_kind":       enum("", "hardware", "swtpm", "simulated", "none"),
			"ek_fingerprint": str("identifies the TPM; empty without one"),
			"cert_serial":    str("current certificate, lowercase hex"),
			"cert_not_after": nullable("string", "date-time", ""),
			"status":         enum("", "enrolled", "revoked"),
			"online":         boolean("connected to the broker"),
			"quarantined":    boolean("its last attestation verdict was untrusted or stale: excluded from rollouts and key releases until trusted again"),
			"kem_key":        boolean("the device registered its KEM public key (not shown), which package keys are granted to; without one it gets no key grants"),
			"last_seen_at":   nullable("string", "date-time", ""),
			"created_at":     dateTime(""),
		}),
		"DevicePatch": object("at least one field", []string{}, obj{
			"name": str("1 to 128 printable characters"),
			"labels": obj{"type": "object", "maxProperties": maxLabels, "description": "replaces all labels; keys 1 to 63 of [A-Za-z0-9._/-], values empty or 1 to 63 of [A-Za-z0-9._-]",
				"additionalProperties": obj{"type": "string"}},
		}),
		"RevokeRequest": object("optional; no fields", []string{}, obj{}),
		"AttestationRecord": object("one verdict of the device's history, as published on MQTT",
			[]string{"state", "reasons", "pcr_digest", "evidence_at", "verdict_at", "reboot"}, obj{
				"state": enum("", wire.VerdictTrusted, wire.VerdictUntrusted, wire.VerdictStale, wire.VerdictUnknown),
				"reasons": arrayOf(object("machine-readable reason", []string{"code"}, obj{
					"code":   str("e.g. PCR_POLICY, NONCE_REPLAYED, NO_ANSWER"),
					"detail": str(""),
					"pcr":    obj{"type": "integer", "description": "the PCR concerned, if any"},
				})),
				"pcr_digest":  str("hex SHA-256 of the quoted PCRs; empty without authentic evidence"),
				"evidence_at": nullable("string", "date-time", "time of the evidence the verdict is about"),
				"verdict_at":  dateTime(""),
				"reboot":      boolean("the TPM reset count grew since the last trusted evidence"),
			}),
		"AttestChallengeSent": object("the challenge published on the device's cmd/attest topic; the verdict is published, retained, on tg/v1/<tenant>/fleets/<fleet>/attestation/<device>",
			[]string{"challenge_id", "device", "pcrs", "issued_at", "expires_at"}, obj{
				"challenge_id": str("echoed in the device's evidence"),
				"device":       str("dev-…"),
				"pcrs":         obj{"type": "array", "items": obj{"type": "integer", "minimum": 0, "maximum": 23}, "description": "SHA-256 PCRs quoted"},
				"issued_at":    dateTime(""),
				"expires_at":   dateTime(""),
			}),
		"AuditEntry": object("internal/audit.Entry: verify the chain with internal/audit.Verify or `tgctl audit verify`",
			[]string{"tenant", "seq", "time", "actor", "action", "prev_hash", "hash"}, obj{
				"tenant": str(""), "seq": obj{"type": "integer", "minimum": 1}, "time": dateTime(""),
				"actor":      str("key-…, device:dev-… or system"),
				"action":     str("noun.verb, e.g. fleet.create"),
				"target":     str("id of the object acted on"),
				"request_id": str(""),
				"details":    obj{"type": "object", "description": "canonical JSON; never secrets"},
				"prev_hash":  str("64 hex digits"), "hash": str("64 hex digits"),
			}),
		"AuditPage": object("", []string{"entries", "next_after"}, obj{
			"entries":    arrayOf(ref("AuditEntry")),
			"next_after": obj{"type": "integer", "minimum": 0, "description": "pass as ?after= for the next page"},
		}),
		"MQTTCredentialsRequest": object("", []string{"csr"}, obj{
			"csr": str("PEM PKCS #10 request for an ECDSA P-256 or Ed25519 key"),
		}),
		"MQTTCredentials": object("", []string{"certificate_pem", "ca_pem", "broker_url", "tenant"}, obj{
			"certificate_pem": str("read-only operator client certificate (tenant CA), PEM"),
			"ca_pem":          str("the platform CA, which verifies the broker"),
			"broker_url":      str("e.g. mqtts://host:8883"),
			"tenant":          str(""),
		}),
		"TPMEvidence": object("", []string{"ek_public", "ak_public", "tls_key_public", "tls_key_certify", "tls_key_certify_signature"}, obj{
			"ek_public": b64("TPMT_PUBLIC of the EK"), "ek_cert": b64("DER EK certificate"),
			"ak_public": b64("TPMT_PUBLIC of the AK"), "tls_key_public": b64("TPMT_PUBLIC of the TLS key"),
			"tls_key_certify": b64("TPMS_ATTEST of TPM2_Certify"), "tls_key_certify_signature": b64("TPMT_SIGNATURE"),
		}),
		"EnrollRequest": object("wire.EnrollRequest", []string{"token", "csr", "tpm_kind"}, obj{
			"token": str("tgt_…"), "csr": b64("PKCS #10, DER (PEM accepted)"),
			"tpm_kind":   enum("", wire.TPMKindHardware, wire.TPMKindSWTPM, wire.TPMKindSimulated, wire.TPMKindNone),
			"tpm":        ref("TPMEvidence"),
			"kem_public": b64("the device's X-Wing public key (tgsp recipient encoding) for package key grants; bound into tls_key_certify"),
		}),
		"Challenge": object("wire.Challenge", []string{"session_id", "credential_blob", "encrypted_secret", "expires_at"}, obj{
			"session_id": str(""), "credential_blob": b64("TPM2B_ID_OBJECT"), "encrypted_secret": b64("TPM2B_ENCRYPTED_SECRET"),
			"expires_at": dateTime(""),
		}),
		"ChallengeAnswer": object("wire.ChallengeAnswer", []string{"session_id", "secret"}, obj{
			"session_id": str(""), "secret": b64("released by TPM2_ActivateCredential"),
		}),
		"EnrollResponse": object("wire.EnrollResponse", []string{"device_id", "certificate_pem", "ca_pem"}, obj{
			"device_id": str("dev-…"), "certificate_pem": str("device certificate and chain"), "ca_pem": str("fleet CA root"),
		}),
		"RenewRequest": object("", []string{"csr"}, obj{"csr": str("PEM PKCS #10 for the same TPM key")}),
		"PolicyPush": object("the sources of a policy bundle (docs/policy.md); at most 1 MiB in all", []string{"files"}, obj{
			"files": obj{"type": "object", "minProperties": 1, "maxProperties": 256,
				"description":          "relative path → content: .rego modules (package tensorguard.install must define allow) and data.json/data.yaml documents",
				"additionalProperties": obj{"type": "string"}},
		}),
		"PolicyRevision": object("a fleet's signed policy bundle", policyRevisionFields, policyRevisionProps),
		"PolicyPushed":   object("the revision a push created", append(slices.Clone(policyRevisionFields), "files", "roots"), policyPushedProps),
		"PolicyKey": object("wire.PolicyKey: the tenant's policy verification key, pinned by devices on first fetch", []string{"key_id", "algorithm", "public_key_pem"}, obj{
			"key_id":         str("tgpol-<32 hex digits>: the kid of every bundle signature"),
			"algorithm":      enum("JWS algorithm", "ES256"),
			"public_key_pem": str("ECDSA P-256 public key, PEM PUBLIC KEY"),
		}),
		"PolicyBundleFile": obj{"type": "string", "contentMediaType": wire.PolicyBundleContentType,
			"description": "a signed OPA bundle (gzipped tar: modules, /data.json, /.manifest, /.signatures.json)"},
		"Publisher": object("a TGSP signer key the tenant trusts: pushed packages must be signed by one", []string{"name", "key_id", "public_key_pem", "created_at"}, obj{
			"name":           str("1 to 63 of [A-Za-z0-9._-], unique in the tenant, never 32 hex digits"),
			"key_id":         str("tgsp key id, 32 hex digits (the manifest's publisher_key_id)"),
			"public_key_pem": str("TGSP SIGNER PUBLIC KEY, PEM"),
			"created_at":     dateTime(""),
		}),
		"PublisherCreate": object("", []string{"name", "public_key_pem"}, obj{
			"name":           str("1 to 63 of [A-Za-z0-9._-], not of the form of a key id"),
			"public_key_pem": str("the PREFIX.pub that `tgsp keygen --kind signer` wrote"),
		}),
		"RecipientKey": object("the control plane's TGSP recipient key of the tenant: pack with `tgsp pack --recipient` set to it", []string{"key_id", "public_key_pem"}, obj{
			"key_id":         str("tgsp key id, 32 hex digits"),
			"public_key_pem": str("TGSP RECIPIENT PUBLIC KEY, PEM"),
		}),
		"PackageFile": obj{"type": "string", "contentMediaType": "application/octet-stream",
			"description": "a TGSP package file (.tgsp), as `tgsp pack` wrote it"},
		"Package": object("a package in the tenant's registry", packageFields, packageProps),
		"PackageDetail": object("a package with its signed manifest and attached documents, JSON as stored",
			append(slices.Clone(packageFields), "manifest", "dp_cert", "evidence"), packageDetailProps),
		"KeyGrantRequest": object("wire.KeyGrantRequest", []string{"job_id", "package_id"}, obj{
			"job_id":     str("the job the key is for"),
			"package_id": str("the package's id (64 hex digits)"),
		}),
		"KeyGrant": object("wire.KeyGrant: the package DEK wrapped to the device's KEM key (tgsp.Package.OpenGrant opens it)", []string{"schema", "package_id", "grant"}, obj{
			"schema":     str("\"" + wire.KeyGrantSchema + "\""),
			"package_id": str(""),
			"grant":      b64("a TGSP recipient stanza for the device's key"),
		}),
		"KEMKeyRequest": object("wire.KEMKeyRequest", []string{"kem_public"}, obj{
			"kem_public": b64("X-Wing public key, tgsp recipient encoding"),
		}),
	}
}

// errorResponses are the reusable error responses, by status.
var errorResponses = map[int]string{
	400: "BadRequest", 401: "Unauthenticated", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
	409: "Conflict", 410: "Gone", 413: "PayloadTooLarge", 415: "UnsupportedMediaType", 500: "Internal",
}

// opDoc describes one operation.
type opDoc struct {
	method, path, id, summary string
	auth                      string // "viewer", "operator", "admin", "" (none), "token", "session", "mtls"
	query                     []obj
	body                      string // request schema, "" for none
	bodyOptional              bool
	status                    int
	resp                      obj // response schema; nil for no body
	errors                    []int
}

func queryParam(name, desc string, schema obj, multi bool) obj {
	p := obj{"name": name, "in": "query", "required": false, "description": desc, "schema": schema}
	if multi {
		p["schema"] = arrayOf(schema)
		p["style"], p["explode"] = "form", true
	}
	return p
}

func operations() []opDoc {
	list := func(name string) obj { return arrayOf(ref(name)) }
	return []opDoc{
		{"get", "/healthz", "healthz", "Liveness", "", nil, "", false, 200, ref("Status"), nil},
		{"get", "/readyz", "readyz", "Readiness: the database and the broker answer", "", nil, "", false, 200, ref("Status"), []int{503}},
		{"get", "/api/v1/openapi.json", "getOpenAPI", "This document", "", nil, "", false, 200, obj{"type": "object"}, nil},
		{"get", "/api/v1/whoami", "whoami", "The caller's tenant, operator, key and role", "viewer", nil, "", false, 200, ref("Whoami"), nil},
		{"get", "/api/v1/ca", "getCA", "The platform and tenant CA certificates and the CA pin", "viewer", nil, "", false, 200, ref("CAInfo"), []int{404}},

		{"get", "/api/v1/operators", "listOperators", "List operators", "admin", nil, "", false, 200, list("Operator"), nil},
		{"post", "/api/v1/operators", "createOperator", "Create an operator", "admin", nil, "OperatorCreate", false, 201, ref("Operator"), []int{409}},
		{"get", "/api/v1/operators/{id}", "getOperator", "Get an operator", "admin", nil, "", false, 200, ref("Operator"), []int{404}},
		{"patch", "/api/v1/operators/{id}", "updateOperator", "Change an operator's role or disable it", "admin", nil, "OperatorPatch", false, 200, ref("Operator"), []int{404, 409}},
		{"delete", "/api/v1/operators/{id}", "deleteOperator", "Delete an operator and its API keys", "admin", nil, "", false, 204, nil, []int{404, 409}},

		{"get", "/api/v1/api-keys", "listAPIKeys", "List API keys", "admin", nil, "", false, 200, list("APIKey"), nil},
		{"post", "/api/v1/api-keys", "createAPIKey", "Create an API key (the key is shown once)", "admin", nil, "APIKeyCreate", false, 201, ref("APIKeyCreated"), []int{404}},
		{"delete", "/api/v1/api-keys/{id}", "revokeAPIKey", "Revoke an API key", "admin", nil, "", false, 204, nil, []int{404}},

		{"get", "/api/v1/fleets", "listFleets", "List fleets", "viewer", nil, "", false, 200, list("Fleet"), nil},
		{"post", "/api/v1/fleets", "createFleet", "Create a fleet", "operator", nil, "FleetCreate", false, 201, ref("Fleet"), []int{409}},
		{"get", "/api/v1/fleets/{fleet}", "getFleet", "Get a fleet by id or name", "viewer", nil, "", false, 200, ref("Fleet"), []int{404}},
		{"patch", "/api/v1/fleets/{fleet}", "updateFleet", "Change a fleet's policy", "operator", nil, "FleetPatch", false, 200, ref("Fleet"), []int{404}},
		{"delete", "/api/v1/fleets/{fleet}", "deleteFleet", "Delete a fleet without devices, and its tokens", "operator", nil, "", false, 204, nil, []int{404, 409}},

		{"post", "/api/v1/fleets/{fleet}/enrollment-tokens", "createEnrollmentToken", "Create a one-time enrollment token (shown once)", "operator", nil, "EnrollmentTokenCreate", true, 201, ref("EnrollmentTokenCreated"), []int{404}},
		{"get", "/api/v1/fleets/{fleet}/enrollment-tokens", "listEnrollmentTokens", "List a fleet's enrollment tokens", "viewer", nil, "", false, 200, list("EnrollmentToken"), []int{404}},
		{"delete", "/api/v1/enrollment-tokens/{id}", "deleteEnrollmentToken", "Withdraw an enrollment token", "operator", nil, "", false, 204, nil, []int{404}},

		{"post", "/api/v1/fleets/{fleet}/policy", "pushPolicy", "Compile, sign and store a policy bundle as the fleet's next revision, and notify its devices; 400 names the file and line of a broken policy", "operator", nil, "PolicyPush", false, 201, ref("PolicyPushed"), []int{404, 503}},
		{"get", "/api/v1/fleets/{fleet}/policy", "getPolicy", "The fleet's current policy revision (404 before the first push)", "viewer", nil, "", false, 200, ref("PolicyRevision"), []int{404}},

		{"get", "/api/v1/devices", "listDevices", "List devices", "viewer", []obj{
			queryParam("fleet", "fleet id or name", obj{"type": "string"}, false),
			queryParam("online", "true or false", obj{"type": "boolean"}, false),
			queryParam("label", "key=value; repeat to require several", obj{"type": "string"}, true),
		}, "", false, 200, list("Device"), []int{404}},
		{"get", "/api/v1/devices/{id}", "getDevice", "Get a device", "viewer", nil, "", false, 200, ref("Device"), []int{404}},
		{"patch", "/api/v1/devices/{id}", "updateDevice", "Rename a device or replace its labels", "operator", nil, "DevicePatch", false, 200, ref("Device"), []int{404}},
		{"delete", "/api/v1/devices/{id}", "deleteDevice", "Delete a device (its certificates are revoked; its TPM may enroll again)", "operator", nil, "", false, 204, nil, []int{404}},
		{"post", "/api/v1/devices/{id}/revoke", "revokeDevice", "Revoke a device and its certificates and disconnect it", "operator", nil, "RevokeRequest", true, 200, ref("Device"), []int{404}},
		{"post", "/api/v1/devices/{id}/attest", "attestDevice", "Send the device an attestation challenge now; the verdict follows on MQTT", "operator", nil, "", false, 202, ref("AttestChallengeSent"), []int{404, 409, 503}},

		{"get", "/api/v1/devices/{id}/attestations", "listAttestations", "The device's attestation verdict history, newest first", "viewer", []obj{
			queryParam("before", "RFC 3339 time: only verdicts before it (pass the last entry's verdict_at to page on)", obj{"type": "string", "format": "date-time"}, false),
			queryParam("limit", "at most this many entries, 1 to 1000 (default 100)", obj{"type": "integer", "minimum": 1, "maximum": MaxAttestationLimit}, false),
		}, "", false, 200, list("AttestationRecord"), []int{404}},

		{"get", "/api/v1/publishers", "listPublishers", "List the tenant's pinned publishers", "viewer", nil, "", false, 200, list("Publisher"), nil},
		{"post", "/api/v1/publishers", "createPublisher", "Pin a TGSP signer key as a publisher", "operator", nil, "PublisherCreate", false, 201, ref("Publisher"), []int{409}},
		{"get", "/api/v1/publishers/{publisher}", "getPublisher", "Get a publisher by name or key id", "viewer", nil, "", false, 200, ref("Publisher"), []int{404}},
		{"delete", "/api/v1/publishers/{publisher}", "deletePublisher", "Unpin a publisher: its packages no longer push, and their keys are no longer granted", "operator", nil, "", false, 204, nil, []int{404}},

		{"get", "/api/v1/packages", "listPackages", "List the tenant's packages", "viewer", []obj{
			queryParam("name", "only versions of this package name", obj{"type": "string"}, false),
		}, "", false, 200, list("Package"), nil},
		{"post", "/api/v1/packages", "pushPackage", "Push a TGSP package (the file as the body): 201 stored, 200 the identical file was already stored", "operator", nil, "PackageFile", false, 201, ref("Package"), []int{409, 422, 503}},
		{"get", "/api/v1/packages/recipient", "getRecipientKey", "The control plane's recipient key of the tenant, to pack to (created on first use)", "viewer", nil, "", false, 200, ref("RecipientKey"), []int{503}},
		{"get", "/api/v1/packages/{package}", "getPackage", "Get a package by id or NAME@VERSION, with its manifest and documents", "viewer", nil, "", false, 200, ref("PackageDetail"), []int{404, 503}},
		{"delete", "/api/v1/packages/{package}", "deletePackage", "Delete a package and its file; refused while a rollout uses it", "operator", nil, "", false, 204, nil, []int{404, 409, 503}},
		{"get", "/api/v1/packages/{package}/blob", "downloadPackage", "Download the package file (Range requests resume)", "viewer", nil, "", false, 200, nil, []int{404, 503}},

		{"get", "/api/v1/audit", "listAudit", "Page through the tenant's audit chain", "viewer", []obj{
			queryParam("after", "return entries with seq > after (default 0)", obj{"type": "integer", "minimum": 0}, false),
			queryParam("limit", "at most this many entries, 1 to 1000 (default 100)", obj{"type": "integer", "minimum": 1, "maximum": MaxAuditLimit}, false),
		}, "", false, 200, ref("AuditPage"), nil},
		{"post", "/api/v1/mqtt/credentials", "createMQTTCredentials", "Issue a read-only MQTT client certificate for the tenant's topics", "viewer", nil, "MQTTCredentialsRequest", false, 200, ref("MQTTCredentials"), nil},

		{"post", "/api/v1/enroll", "enroll", "Enroll a device with a one-time token: 200 Challenge (TPM) or 201 EnrollResponse (no TPM, fleet allows it)", "token", nil, "EnrollRequest", false, 200, ref("Challenge"), []int{404, 409, 410}},
		{"post", "/api/v1/enroll/activate", "enrollActivate", "Answer the credential-activation challenge", "session", nil, "ChallengeAnswer", false, 201, ref("EnrollResponse"), []int{404, 409, 410}},
		{"post", "/api/v1/device/renew", "deviceRenew", "Renew the device certificate (same TPM key)", "mtls", nil, "RenewRequest", false, 200, ref("EnrollResponse"), nil},
		{"get", "/api/v1/device/self", "deviceSelf", "The calling device", "mtls", nil, "", false, 200, ref("Device"), nil},
		{"get", "/api/v1/device/policy", "devicePolicy", "The signed policy bundle of the device's fleet (ETag: its SHA-256; If-None-Match answers 304); 404 before the first push", "mtls", nil, "", false, 200, nil, []int{404}},
		{"get", "/api/v1/device/policy/key", "devicePolicyKey", "The tenant's policy verification key; 404 before the first push", "mtls", nil, "", false, 200, ref("PolicyKey"), []int{404}},
		{"get", "/api/v1/device/packages/{id}", "devicePackage", "Download a package file of the device's tenant (Range requests resume)", "mtls", nil, "", false, 200, nil, []int{404, 503}},
		{"post", "/api/v1/device/key-grants", "deviceKeyGrant", "The package key wrapped to the device's KEM key; 403 KEY_GRANT_REFUSED unless the device is enrolled, trusted, not quarantined and entitled by its job", "mtls", nil, "KeyGrantRequest", false, 200, ref("KeyGrant"), []int{503}},
		{"put", "/api/v1/device/kem-key", "deviceKEMKey", "Register the device's KEM public key, once (a device enrolled without one)", "mtls", nil, "KEMKeyRequest", false, 200, ref("Device"), []int{409}},
	}
}

func jsonContent(schema obj) obj {
	return obj{"application/json": obj{"schema": schema}}
}

func pathParams(path string) []any {
	var out []any
	for _, seg := range strings.Split(path, "/") {
		if name, ok := strings.CutPrefix(seg, "{"); ok {
			name = strings.TrimSuffix(name, "}")
			desc := "object id"
			if name == "fleet" {
				desc = "fleet id (flt-…) or name"
			}
			out = append(out, obj{"name": name, "in": "path", "required": true, "description": desc, "schema": obj{"type": "string"}})
		}
	}
	return out
}

// OpenAPI returns the OpenAPI 3.1 document describing every route of
// docs/api.md, including those the control-plane core serves.
func OpenAPI() map[string]any {
	paths := obj{}
	for _, op := range append(operations(), rolloutOperations()...) {
		item, _ := paths[op.path].(obj)
		if item == nil {
			item = obj{}
			paths[op.path] = item
		}
		o := obj{"operationId": op.id, "summary": op.summary}
		params := pathParams(op.path)
		for _, q := range op.query {
			params = append(params, q)
		}
		if len(params) > 0 {
			o["parameters"] = params
		}
		errs := map[int]bool{500: true}
		for _, e := range op.errors {
			errs[e] = true
		}
		switch op.auth {
		case "viewer", "operator", "admin":
			o["security"] = []any{obj{"apiKey": []any{}}}
			o["x-required-role"] = op.auth
			errs[401], errs[403] = true, true
		case "mtls":
			o["security"] = []any{obj{"deviceCert": []any{}}}
			errs[401], errs[403] = true, true
		default:
			o["security"] = []any{}
		}
		if op.auth == "token" || op.auth == "session" {
			errs[403] = true
		}
		if op.body != "" {
			content := jsonContent(ref(op.body))
			if binaryRequest[op.id] {
				content = obj{"application/octet-stream": obj{"schema": ref(op.body)}}
			}
			o["requestBody"] = obj{"required": !op.bodyOptional, "content": content}
			errs[400], errs[413], errs[415] = true, true, true
		}
		if len(op.query) > 0 {
			errs[400] = true
		}
		reqID := obj{"X-Request-Id": obj{"$ref": "#/components/headers/X-Request-Id"}}
		resp := obj{"description": http.StatusText(op.status), "headers": reqID}
		if op.resp != nil {
			resp["content"] = jsonContent(op.resp)
		}
		responses := obj{strconv.Itoa(op.status): resp}
		if binaryResponse[op.id] {
			file := obj{"application/octet-stream": obj{"schema": ref("PackageFile")}}
			resp["content"] = file
			resp["description"] = "the package file; ETag is its id"
			responses["206"] = obj{"description": "the requested byte range (Range, If-Range)", "headers": reqID, "content": file}
			responses["416"] = obj{"description": "the range is outside the file (the body is not JSON)", "headers": reqID}
		}
		if op.id == "devicePolicy" {
			resp["content"] = obj{wire.PolicyBundleContentType: obj{"schema": ref("PolicyBundleFile")}}
			resp["description"] = "the signed bundle; X-TG-Policy-Revision and X-TG-Policy-Key-Id repeat what its signed manifest says"
			responses["304"] = obj{"description": "If-None-Match matched: the device has this bundle", "headers": reqID}
		}
		if op.id == "pushPackage" {
			responses["200"] = obj{"description": "the identical file was already stored (nothing changed)", "headers": reqID, "content": jsonContent(ref("Package"))}
		}
		if op.id == "enroll" {
			responses["201"] = obj{"description": "enrolled without a TPM", "headers": reqID, "content": jsonContent(ref("EnrollResponse"))}
		}
		var codes []int
		for c := range errs {
			codes = append(codes, c)
		}
		sort.Ints(codes)
		for _, c := range codes {
			if name, ok := errorResponses[c]; ok {
				responses[strconv.Itoa(c)] = obj{"$ref": "#/components/responses/" + name}
			} else {
				responses[strconv.Itoa(c)] = obj{"description": http.StatusText(c), "content": jsonContent(ref("Error"))}
			}
		}
		o["responses"] = responses
		item[op.method] = o
	}
	responses := obj{}
	for status, name := range errorResponses {
		responses[name] = obj{
			"description": http.StatusText(status),
			"headers":     obj{"X-Request-Id": obj{"$ref": "#/components/headers/X-Request-Id"}},
			"content":     jsonContent(ref("Error")),
		}
	}
	return obj{
		"openapi":           "3.1.0",
		"jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
		"info": obj{
			"title":   "TensorGuardFlow control plane",
			"version": "v1",
			"description": "The v1 REST contract of docs/api.md. Bodies are JSON objects of at most 1 MiB " +
				"(Content-Type: application/json; unknown fields, trailing data and wrong types are 400). " +
				"Every response carries X-Request-Id; every error is {\"error\":{\"code\",\"message\",\"request_id\"}}. " +
				"x-required-role names the least API-key role of an operation.",
		},
		"servers": []any{obj{"url": "/"}},
		"paths":   paths,
		"components": obj{
			"schemas":   withRolloutSchemas(schemas()),
			"responses": responses,
			"headers": obj{"X-Request-Id": obj{
				"description": "the request's id: the caller's if it is 1 to 64 of [A-Za-z0-9._-], else generated",
				"schema":      obj{"type": "string"},
			}},
			"securitySchemes": obj{
				"apiKey":     obj{"type": "http", "scheme": "bearer", "description": "tgk_<key id>_<secret>"},
				"deviceCert": obj{"type": "mutualTLS", "description": "the device certificate from enrollment"},
			},
		},
	}
}

// OpenAPIJSON returns OpenAPI() as indented JSON.
func OpenAPIJSON() ([]byte, error) {
	b, err := json.MarshalIndent(OpenAPI(), "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
