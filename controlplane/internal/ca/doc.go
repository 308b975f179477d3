// Package ca is the control plane's certificate authority: a platform CA that
// vouches for the control plane itself, and one CA per tenant (the "fleet CA"
// of docs/identity.md) that issues device and operator client certificates.
//
// # Platform CA
//
// An ECDSA P-256 root that issues the server certificate of the HTTPS
// listener and of the MQTT broker, and the control plane's own client
// certificate for an external broker. Its hash — "sha256:" and the hex SHA-256
// of its certificate's DER — is the CA hash an agent pins at enrollment
// (docs/api.md). It lives in two files in the data directory:
//
//	<data_dir>/pki/platform-ca.crt           the certificate (PEM)
//	<data_dir>/pki/platform-ca.key.wrapped   PKCS #8 key wrapped by the KEK (kek.Provider.WrapKey)
//
// It is in files rather than in the database because it exists before any
// tenant does (the schema has CA rows only per tenant) and because the key
// is useless without the KEK anyway; replicas share it by sharing the data
// directory (or copying the two files, which are not secret without the KEK).
// The wrap is bound to the aad "tensorguardflow platform-ca v1", so a wrapped
// tenant key cannot be passed off as the platform key or vice versa.
//
// # Tenant CAs
//
// Each tenant has an ECDSA P-256 root (store.CA), created with the tenant by
// CreateTenant. Its private key is sealed with the tenant's data key (a
// kek.Keyring envelope, aad "tenant_cas/<tenant>/private_key"), and the DEK is
// wrapped under the KEK: the database alone reveals no CA key, and a key row
// copied to another tenant does not open. The store keeps one wrapped DEK per
// tenant, which this package treats as DEK version 1.
//
// Device certificates (docs/identity.md): subject CN=<device>, O=<tenant>,
// OU=<fleet>; exactly one URI SAN spiffe://tensorguardflow/tenant/<t>/device/<d>;
// client-auth only; random 128-bit serials; lifetime from the fleet policy
// (default 24 h); recorded by the caller with store.RecordCertificate.
// Operator MQTT certificates carry the operator SPIFFE SAN, CN=<operator id>,
// and live OperatorCertTTL. They are not rows of issued_certs (that table
// belongs to devices): an operator certificate is refused at TLS once its
// operator is disabled or deleted (HTTPS), and it expires within a day
// (MQTT, where only the serial is known — see BrokerAuthority).
//
// # Verification and revocation
//
// ClientCAs is the pool of every tenant root; it is reloaded from the store
// every RefreshInterval and at once by Refresh (after a tenant is created).
// VerifyClient is the HTTPS listener's VerifyConnection step: the chain must
// end at the root of the tenant its SAN names (a certificate of tenant A's CA
// claiming tenant B is refused), and a device certificate must be one the CA
// recorded and not revoked. Revocation answers are cached for
// RevocationCacheTTL; InvalidateRevocations (called when this process revokes
// a device) drops the cache, so revocation through this process takes effect
// at once and revocation through another replica within the TTL.
package ca
