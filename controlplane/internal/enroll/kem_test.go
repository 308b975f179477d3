package enroll_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/enroll"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/enrollbind"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmdevtest"
	"github.com/tensorguard/tensorguardflow/tgsp"
)

func kemPublic(t *testing.T) []byte {
	t.Helper()
	k, err := tgsp.GenerateRecipient(nil)
	if err != nil {
		t.Fatal(err)
	}
	return k.Public().Bytes()
}

// requestKEM builds the request as the agent does since key grants: the
// certification covers the KEM public key too.
func (a *agent) requestKEM(t *testing.T, token string, kem []byte) *enroll.Request {
	t.Helper()
	req := a.request(t, token)
	c, err := a.d.CertifyKey(a.tls, a.ak, enrollbind.QualifyingDataKEM(token, req.CSR, kem))
	if err != nil {
		t.Fatal(err)
	}
	req.TPM.TLSKeyCertify, req.TPM.TLSKeyCertifySignature = c.Attest, c.Signature
	req.KEMPublic = kem
	return req
}

// TestEnrollKEMKey: the KEM public key an agent sends with its TPM evidence
// ends up in the facts; one swapped, added or removed after the TPM
// certified the request is refused as not bound; one that does not parse
// is a malformed request; a request without one (an older agent) still
// enrolls, without a key.
func TestEnrollKEMKey(t *testing.T) {
	ca := tpmdevtest.NewCA(t, "trusted TPM manufacturer")
	a := newAgent(t, openSim(t, ca.IssueEK))
	v, err := enroll.NewVerifier(enroll.Config{EKRoots: ca.Pool(), AllowedKinds: []string{enroll.KindSimulated}})
	if err != nil {
		t.Fatal(err)
	}
	mine, other := kemPublic(t), kemPublic(t)
	truncated := mine[:len(mine)-1]
	cases := []struct {
		name    string
		req     func() *enroll.Request
		want    error
		wantKEM []byte
	}{
		{"with a KEM key", func() *enroll.Request { return a.requestKEM(t, token, mine) }, nil, mine},
		{"older agent, no KEM key", func() *enroll.Request { return a.request(t, token) }, nil, nil},
		{"KEM key swapped after certification", func() *enroll.Request {
			req := a.requestKEM(t, token, mine)
			req.KEMPublic = other
			return req
		}, enroll.ErrCertifyNotBound, nil},
		{"KEM key added to a certification without one", func() *enroll.Request {
			req := a.request(t, token)
			req.KEMPublic = other
			return req
		}, enroll.ErrCertifyNotBound, nil},
		{"KEM key removed after certification", func() *enroll.Request {
			req := a.requestKEM(t, token, mine)
			req.KEMPublic = nil
			return req
		}, enroll.ErrCertifyNotBound, nil},
		{"malformed KEM key, certified as it is", func() *enroll.Request { return a.requestKEM(t, token, truncated) }, enroll.ErrMalformedRequest, nil},
		{"a signer key where the KEM key belongs", func() *enroll.Request {
			s, err := tgsp.GenerateSigner(nil)
			if err != nil {
				t.Fatal(err)
			}
			return a.requestKEM(t, token, s.Public().MarshalPEM())
		}, enroll.ErrMalformedRequest, nil},
	}
	ctx := context.Background()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ch, err := v.Begin(ctx, overTheWire(t, c.req()))
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("Begin: %v, want %v", err, c.want)
			}
			if err != nil {
				t.Logf("refused as expected: %v", err)
				return
			}
			facts, err := v.Finish(ctx, overTheWire(t, mustAnswer(t, a)(overTheWire(t, ch))))
			if err != nil {
				t.Fatalf("Finish: %v", err)
			}
			if !bytes.Equal(facts.KEMPublic, c.wantKEM) || (c.wantKEM == nil) != (facts.KEMPublic == nil) {
				t.Fatalf("facts carry KEM key %x…, want %x…", head(facts.KEMPublic), head(c.wantKEM))
			}
		})
	}
}

func head(b []byte) []byte { return b[:min(len(b), 8)] }

// TestVerifyCSROnlyKEMKey: a device without a TPM may send a KEM key; it
// must parse.
func TestVerifyCSROnlyKEMKey(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr := softwareCSR(t, ec)
	kem := kemPublic(t)
	f, err := enroll.VerifyCSROnly(&enroll.Request{Token: token, CSR: csr, TPMKind: enroll.KindNone, KEMPublic: kem})
	if err != nil || !bytes.Equal(f.KEMPublic, kem) {
		t.Fatalf("with a KEM key: %v, facts key %x…", err, head(f.KEMPublic))
	}
	bad := bytes.Clone(kem)
	bad[0] = 0x02 // unknown algorithm
	if _, err := enroll.VerifyCSROnly(&enroll.Request{Token: token, CSR: csr, TPMKind: enroll.KindNone, KEMPublic: bad}); !errors.Is(err, enroll.ErrMalformedRequest) {
		t.Fatalf("malformed KEM key: %v, want ErrMalformedRequest", err)
	}
}
