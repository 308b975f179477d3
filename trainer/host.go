package trainer

import (
	"context"
	"errors"
	"net/http"

	"github.com/tensorguard/tensorguardflow/tgsp"
)

// ErrUnauthenticated is what Host.Authenticate returns for a request
// without a valid API key.
var ErrUnauthenticated = errors.New("unauthenticated")

// Principal is an authenticated caller.
type Principal struct {
	Tenant string
	KeyID  string
	// CanWrite is false for read-only keys (they may read futures and
	// privacy, not submit work).
	CanWrite bool
}

// Host is what the trainer needs from the control plane that mounts it:
// the tenants' API keys, their data keys, their audit chains and the keys
// a trained model is exported with. The control plane implements it; the
// trainer never sees its storage.
type Host interface {
	// Authenticate checks the request's bearer API key.
	Authenticate(r *http.Request) (Principal, error)
	// Seal and Open encrypt with the tenant's data key (AES-256-GCM under
	// a DEK wrapped by the KEK, rotation keeping old envelopes readable),
	// binding aad.
	Seal(ctx context.Context, tenant string, plaintext, aad []byte) ([]byte, error)
	Open(ctx context.Context, tenant string, envelope, aad []byte) ([]byte, error)
	// Audit appends to the tenant's audit hash chain and returns the new
	// head (hex SHA-256).
	Audit(ctx context.Context, tenant, actor, action, target string, details any) (string, error)
	// ExportKeys returns the tenant's trainer signing key (the publisher
	// of exported packages) and the recipients to pack them to (the
	// control plane's package key, so the package can be pushed and rolled
	// out).
	ExportKeys(ctx context.Context, tenant string) (*tgsp.SignerPrivateKey, []*tgsp.RecipientPublicKey, error)
}
