// Package client is a small typed Go client for the control plane's operator
// API, /api/v1 (docs/api.md is the contract). tgctl and the integration tests
// use it; the agent does not (it must not import controlplane/) and speaks the
// device routes itself.
//
// # Trust
//
// A Client talks plain HTTP to http:// URLs (loopback development only, the
// server refuses it elsewhere) and TLS to https:// URLs. For TLS it trusts,
// in this order of preference:
//
//   - WithCAHash("sha256:<hex>"): kubeadm-style pinning. The hash is SHA-256
//     of the platform CA certificate's DER, as `tgctl token create` and
//     `GET /api/v1/ca` print it. The server must present that CA certificate
//     in its chain; the chain is then verified (signatures, validity, server
//     name, server-auth usage) against that CA alone — the system roots play
//     no part. A server whose chain holds another CA is refused before any
//     request (and so the API key) is sent.
//   - WithCAFile / WithCAPEM: the chain must verify against these roots only.
//     With a hash as well, the verified chain must also contain the pinned CA.
//   - nothing: the system roots.
//
// # Errors
//
// A response with an error status is returned as *wire.APIError (code,
// message, request id; the request id falls back to the X-Request-Id header)
// when its body is the documented JSON error, and as *HTTPError (status,
// content type and the start of the body) when it is not — a proxy's HTML
// page, an empty 502. Transport and TLS failures are returned wrapped, as
// net/http reports them. No error ever contains the API key.
package client
