package enroll_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/enroll"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/enrollbind"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmdevtest"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmsim"
)

// agent is the device side of enrollment, as the real agent will run it,
// over a real TPM.
type agent struct {
	d   *tpmdev.Device
	ek  *tpmdev.EK
	ak  *tpmdev.Key
	tls *tpmdev.Key
}

func newAgent(t *testing.T, d *tpmdev.Device) *agent {
	t.Helper()
	a := &agent{d: d}
	var err error
	if a.ek, err = d.EK(); err != nil {
		t.Fatal(err)
	}
	if a.ak, err = d.AK(); err != nil {
		t.Fatal(err)
	}
	if a.tls, err = d.TLSKey(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.ek.Close(); a.ak.Close(); a.tls.Close() })
	return a
}

func (a *agent) csr(t *testing.T) []byte {
	t.Helper()
	signer, err := a.tls.Signer()
	if err != nil {
		t.Fatal(err)
	}
	csr, err := tpmdev.CreateCSR(signer, pkix.Name{CommonName: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

// request builds the enrollment request exactly as the agent does.
func (a *agent) request(t *testing.T, token string) *enroll.Request {
	t.Helper()
	csr := a.csr(t)
	c, err := a.d.CertifyKey(a.tls, a.ak, enrollbind.QualifyingData(token, csr))
	if err != nil {
		t.Fatal(err)
	}
	return &enroll.Request{
		Token:   token,
		CSR:     csr,
		TPMKind: string(a.d.Kind()),
		TPM: &enroll.TPMEvidence{
			EKPublic:               a.ek.PublicArea(),
			EKCert:                 a.ek.Cert,
			AKPublic:               a.ak.PublicArea(),
			TLSKeyPublic:           a.tls.PublicArea(),
			TLSKeyCertify:          c.Attest,
			TLSKeyCertifySignature: c.Signature,
		},
	}
}

// answer runs TPM2_ActivateCredential; when the TPM refuses (as it must
// when the AK is not the one the challenge is for), the agent can only
// guess.
func (a *agent) answer(t *testing.T, ch *enroll.Challenge) (*enroll.ChallengeAnswer, error) {
	t.Helper()
	secret, err := a.d.ActivateCredential(a.ak, a.ek, ch.CredentialBlob, ch.EncryptedSecret)
	if err != nil {
		secret = make([]byte, 32)
		_, _ = rand.Read(secret)
	}
	return &enroll.ChallengeAnswer{SessionID: ch.SessionID, Secret: secret}, err
}

// overTheWire sends v through its JSON encoding, as the HTTP API will.
func overTheWire[T any](t *testing.T, v *T) *T {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func openSim(t *testing.T, issue tpmsim.IssueEKCert) *tpmdev.Device {
	t.Helper()
	d, err := tpmsim.Open(issue)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// tpmPublic encodes the TPMT_PUBLIC a TPM would show for a software ECDSA
// key with the given attributes and scheme.
func tpmPublic(t *testing.T, k *ecdsa.PublicKey, attrs tpm2.KeyProp) tpm2.Public {
	t.Helper()
	point, err := k.Bytes() // 0x04 ‖ X ‖ Y
	if err != nil {
		t.Fatal(err)
	}
	return tpm2.Public{
		Type: tpm2.AlgECC, NameAlg: tpm2.AlgSHA256, Attributes: attrs,
		ECCParameters: &tpm2.ECCParams{
			Sign:    &tpm2.SigScheme{Alg: tpm2.AlgECDSA, Hash: tpm2.AlgSHA256},
			CurveID: tpm2.CurveNISTP256,
			Point:   tpm2.ECPoint{XRaw: point[1:33], YRaw: point[33:]},
		},
	}
}

func encode(t *testing.T, p tpm2.Public) []byte {
	t.Helper()
	b, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// forgeCertify builds a TPMS_ATTEST of type certify naming certified, with
// extraData, and signs it with a software key, as an attacker without a TPM
// would.
func forgeCertify(t *testing.T, certified tpm2.Public, extraData []byte, signer *ecdsa.PrivateKey) (attest, sig []byte) {
	t.Helper()
	name, err := certified.Name()
	if err != nil {
		t.Fatal(err)
	}
	nameBytes, err := name.Digest.Encode()
	if err != nil {
		t.Fatal(err)
	}
	attest, err = tpmutil.Pack(uint32(0xff544347), tpm2.TagAttestCertify, tpmutil.U16Bytes(nil),
		tpmutil.U16Bytes(extraData), tpm2.ClockInfo{Clock: 1, Safe: 1}, uint64(1),
		tpmutil.U16Bytes(nameBytes), tpmutil.U16Bytes(nameBytes))
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(attest)
	r, s, err := ecdsa.Sign(rand.Reader, signer, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	sig, err = tpm2.Signature{Alg: tpm2.AlgECDSA, ECC: &tpm2.SignatureECC{HashAlg: tpm2.AlgSHA256, R: r, S: s}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return attest, sig
}

func softwareCSR(t *testing.T, k crypto.Signer) []byte {
	t.Helper()
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

const token = "tok-abcdefghijklmnopqrst"

// TestEnrollSimulator runs the whole enrollment against the go-tpm-tools
// simulator with an EK certificate from a test manufacturer CA written into
// its NV, and every way it must be refused. The simulator is a process-wide
// singleton, so the cases run one after another.
func TestEnrollSimulator(t *testing.T) {
	trusted := tpmdevtest.NewCA(t, "trusted TPM manufacturer")
	untrusted := tpmdevtest.NewCA(t, "unknown TPM manufacturer")

	cases := []struct {
		name string
		// run performs the device side and returns the request and a
		// function answering the challenge.
		run       func(t *testing.T) (*enroll.Request, func(*enroll.Challenge) *enroll.ChallengeAnswer)
		beginErr  error
		finishErr error
	}{
		{
			name: "genuine TPM enrolls",
			run: func(t *testing.T) (*enroll.Request, func(*enroll.Challenge) *enroll.ChallengeAnswer) {
				a := newAgent(t, openSim(t, trusted.IssueEK))
				return a.request(t, token), mustAnswer(t, a)
			},
		},
		{
			name: "EK certificate from an untrusted CA",
			run: func(t *testing.T) (*enroll.Request, func(*enroll.Challenge) *enroll.ChallengeAnswer) {
				a := newAgent(t, openSim(t, untrusted.IssueEK))
				return a.request(t, token), nil
			},
			beginErr: enroll.ErrEKUntrusted,
		},
		{
			name: "trusted EK certificate for another key",
			run: func(t *testing.T) (*enroll.Request, func(*enroll.Challenge) *enroll.ChallengeAnswer) {
				a := newAgent(t, openSim(t, trusted.IssueEK))
				req := a.request(t, token)
				other, err := rsa.GenerateKey(rand.Reader, 2048)
				if err != nil {
					t.Fatal(err)
				}
				if req.TPM.EKCert, err = trusted.IssueEK(other.Public()); err != nil {
					t.Fatal(err)
				}
				return req, nil
			},
			beginErr: enroll.ErrEKUntrusted,
		},
		{
			name: "AK in another TPM than the EK",
			run: func(t *testing.T) (*enroll.Request, func(*enroll.Challenge) *enroll.ChallengeAnswer) {
				// The genuine TPM lends its EK (public area and certificate)…
				genuine := openSim(t, trusted.IssueEK)
				ek, err := genuine.EK()
				if err != nil {
					t.Fatal(err)
				}
				ekPub, ekCert := ek.PublicArea(), ek.Cert
				ek.Close()
				if err := genuine.Close(); err != nil {
					t.Fatal(err)
				}
				// …to a device whose AK and TLS key live in another TPM.
				a := newAgent(t, openSim(t, nil))
				req := a.request(t, token)
				req.TPM.EKPublic, req.TPM.EKCert = ekPub, ekCert
				return req, mustFailActivation(t, a)
			},
			finishErr: enroll.ErrAKNotInSameTPM,
		},
		{
			name: "software TLS key certified by a forged signature",
			run: func(t *testing.T) (*enroll.Request, func(*enroll.Challenge) *enroll.ChallengeAnswer) {
				a := newAgent(t, openSim(t, trusted.IssueEK))
				sw, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				forger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				swPub := tpmPublic(t, &sw.PublicKey, tpmdev.TLSKeyTemplate().Attributes)
				req := a.request(t, token)
				req.CSR = softwareCSR(t, sw)
				req.TPM.TLSKeyPublic = encode(t, swPub)
				req.TPM.TLSKeyCertify, req.TPM.TLSKeyCertifySignature = forgeCertify(t, swPub, enrollbind.QualifyingData(token, req.CSR), forger)
				return req, nil
			},
			beginErr: enroll.ErrTLSKeyNotTPM,
		},
		{
			name: "software TLS key and software AK claiming TPM attributes",
			run: func(t *testing.T) (*enroll.Request, func(*enroll.Challenge) *enroll.ChallengeAnswer) {
				// Every claim is self-consistent; only credential activation
				// can tell that the AK is not in the EK's TPM.
				a := newAgent(t, openSim(t, trusted.IssueEK))
				sw, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				swAK, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				swPub := tpmPublic(t, &sw.PublicKey, tpmdev.TLSKeyTemplate().Attributes)
				req := a.request(t, token)
				req.CSR = softwareCSR(t, sw)
				req.TPM.TLSKeyPublic = encode(t, swPub)
				req.TPM.AKPublic = encode(t, tpmPublic(t, &swAK.PublicKey, tpm2.FlagSignerDefault))
				req.TPM.TLSKeyCertify, req.TPM.TLSKeyCertifySignature = forgeCertify(t, swPub, enrollbind.QualifyingData(token, req.CSR), swAK)
				return req, mustFailActivation(t, a)
			},
			finishErr: enroll.ErrAKNotInSameTPM,
		},
		{
			name: "duplicable TLS key (not fixedTPM/fixedParent)",
			run: func(t *testing.T) (*enroll.Request, func(*enroll.Challenge) *enroll.ChallengeAnswer) {
				a := newAgent(t, openSim(t, trusted.IssueEK))
				tmpl := tpmdev.TLSKeyTemplate()
				tmpl.Attributes &^= tpm2.FlagFixedTPM | tpm2.FlagFixedParent
				// Simulators (and TPMs without a resource manager) hold
				// only three transient objects: make room first.
				a.tls.Close()
				dup, err := a.d.CreatePrimary(tmpl)
				if err != nil {
					t.Fatal(err)
				}
				a.tls = dup
				return a.request(t, token), nil
			},
			beginErr: enroll.ErrTLSKeyNotTPM,
		},
		{
			name: "unrestricted AK",
			run: func(t *testing.T) (*enroll.Request, func(*enroll.Challenge) *enroll.ChallengeAnswer) {
				a := newAgent(t, openSim(t, trusted.IssueEK))
				tmpl := tpmdev.AKTemplate()
				tmpl.Attributes &^= tpm2.FlagRestricted
				a.ak.Close()
				ak, err := a.d.CreatePrimary(tmpl)
				if err != nil {
					t.Fatal(err)
				}
				a.ak = ak
				return a.request(t, token), nil
			},
			beginErr: enroll.ErrAKInvalid,
		},
		{
			name: "CSR for another key",
			run: func(t *testing.T) (*enroll.Request, func(*enroll.Challenge) *enroll.ChallengeAnswer) {
				a := newAgent(t, openSim(t, trusted.IssueEK))
				req := a.request(t, token)
				sw, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				req.CSR = softwareCSR(t, sw)
				return req, nil
			},
			beginErr: enroll.ErrCSRMismatch,
		},
		{
			name: "tampered certification",
			run: func(t *testing.T) (*enroll.Request, func(*enroll.Challenge) *enroll.ChallengeAnswer) {
				a := newAgent(t, openSim(t, trusted.IssueEK))
				req := a.request(t, token)
				req.TPM.TLSKeyCertify[len(req.TPM.TLSKeyCertify)-1] ^= 1
				return req, nil
			},
			beginErr: enroll.ErrTLSKeyNotTPM,
		},
		{
			name: "certification without TPM_GENERATED_VALUE",
			run: func(t *testing.T) (*enroll.Request, func(*enroll.Challenge) *enroll.ChallengeAnswer) {
				a := newAgent(t, openSim(t, trusted.IssueEK))
				req := a.request(t, token)
				req.TPM.TLSKeyCertify[0] = 0
				return req, nil
			},
			beginErr: enroll.ErrTLSKeyNotTPM,
		},
		{
			name: "certification made for another token",
			run: func(t *testing.T) (*enroll.Request, func(*enroll.Challenge) *enroll.ChallengeAnswer) {
				a := newAgent(t, openSim(t, trusted.IssueEK))
				req := a.request(t, "tok-someoneelsestoken0")
				req.Token = token
				return req, nil
			},
			beginErr: enroll.ErrCertifyNotBound,
		},
		{
			name: "tpm kind none with TPM evidence",
			run: func(t *testing.T) (*enroll.Request, func(*enroll.Challenge) *enroll.ChallengeAnswer) {
				a := newAgent(t, openSim(t, trusted.IssueEK))
				req := a.request(t, token)
				req.TPMKind = enroll.KindNone
				return req, nil
			},
			beginErr: enroll.ErrTPMKindRefused,
		},
		{
			name: "tpm kind not allowed",
			run: func(t *testing.T) (*enroll.Request, func(*enroll.Challenge) *enroll.ChallengeAnswer) {
				a := newAgent(t, openSim(t, trusted.IssueEK))
				req := a.request(t, token)
				req.TPMKind = enroll.KindHardware
				return req, nil
			},
			beginErr: enroll.ErrTPMKindRefused,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v, err := enroll.NewVerifier(enroll.Config{EKRoots: trusted.Pool(), AllowedKinds: []string{enroll.KindSimulated}})
			if err != nil {
				t.Fatal(err)
			}
			req, answer := c.run(t)
			ctx := context.Background()
			ch, err := v.Begin(ctx, overTheWire(t, req))
			if !errors.Is(err, c.beginErr) || (c.beginErr == nil) != (err == nil) {
				t.Fatalf("Begin: %v, want %v", err, c.beginErr)
			}
			if err != nil {
				t.Logf("refused as expected: %v", err)
				return
			}
			ans := answer(overTheWire(t, ch))
			facts, err := v.Finish(ctx, overTheWire(t, ans))
			if !errors.Is(err, c.finishErr) || (c.finishErr == nil) != (err == nil) {
				t.Fatalf("Finish: %v, want %v", err, c.finishErr)
			}
			if err != nil {
				t.Logf("refused as expected: %v", err)
				return
			}
			checkFacts(t, req, facts)
			if facts.TPM.Manufacturer != "id:54474600" || facts.TPM.Model != "tgf-simulator" {
				t.Errorf("TPM info from the EK certificate: %+v", facts.TPM)
			}
			// The session is single use.
			if _, err := v.Finish(ctx, ans); !errors.Is(err, enroll.ErrSessionUnknown) {
				t.Errorf("second Finish: %v, want ErrSessionUnknown", err)
			}
		})
	}
}

// TestEKCertificateRequirement: a TPM that claims to be hardware must show
// a manufacturer's EK certificate; a simulated TPM has none and, where the
// allowed kinds admit simulated TPMs at all, is trusted on first use.
func TestEKCertificateRequirement(t *testing.T) {
	v, err := enroll.NewVerifier(enroll.Config{EKRoots: tpmdevtest.NewCA(t, "manufacturer").Pool(),
		AllowedKinds: []string{enroll.KindHardware, enroll.KindSimulated}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t.Run("hardware claim without EK certificate", func(t *testing.T) {
		a := newAgent(t, openSim(t, nil))
		req := a.request(t, token)
		req.TPMKind = enroll.KindHardware
		if _, err := v.Begin(ctx, overTheWire(t, req)); !errors.Is(err, enroll.ErrEKUntrusted) {
			t.Fatalf("Begin: %v, want ErrEKUntrusted", err)
		}
	})
	t.Run("simulated without EK certificate", func(t *testing.T) {
		a := newAgent(t, openSim(t, nil))
		req := a.request(t, token)
		ch, err := v.Begin(ctx, overTheWire(t, req))
		if err != nil {
			t.Fatalf("Begin: %v", err)
		}
		facts, err := v.Finish(ctx, overTheWire(t, mustAnswer(t, a)(overTheWire(t, ch))))
		if err != nil {
			t.Fatalf("Finish: %v", err)
		}
		if facts.EKCertVerified || facts.TPMKind != enroll.KindSimulated {
			t.Fatalf("facts: EK certificate verified %v, kind %q", facts.EKCertVerified, facts.TPMKind)
		}
	})
}

func mustAnswer(t *testing.T, a *agent) func(*enroll.Challenge) *enroll.ChallengeAnswer {
	return func(ch *enroll.Challenge) *enroll.ChallengeAnswer {
		ans, err := a.answer(t, ch)
		if err != nil {
			t.Fatalf("ActivateCredential on the genuine TPM: %v", err)
		}
		return ans
	}
}

func mustFailActivation(t *testing.T, a *agent) func(*enroll.Challenge) *enroll.ChallengeAnswer {
	return func(ch *enroll.Challenge) *enroll.ChallengeAnswer {
		ans, err := a.answer(t, ch)
		if err == nil {
			t.Fatal("the TPM released a credential made for another TPM or key")
		}
		t.Logf("TPM refused activation: %v", err)
		return ans
	}
}

func checkFacts(t *testing.T, req *enroll.Request, f *enroll.Facts) {
	t.Helper()
	if f.Token != req.Token || f.TPMKind != req.TPMKind || !f.EKCertVerified {
		t.Errorf("facts token/kind/EK: %q %q %v", f.Token, f.TPMKind, f.EKCertVerified)
	}
	tlsPub, err := tpm2.DecodePublic(req.TPM.TLSKeyPublic)
	if err != nil {
		t.Fatal(err)
	}
	k, _ := tlsPub.Key()
	if !f.TLSPublicKey.Equal(k) || !f.CSR.PublicKey.(*ecdsa.PublicKey).Equal(k) {
		t.Error("facts carry another TLS key")
	}
	if string(f.AKPublic) != string(req.TPM.AKPublic) || len(f.AKName) != 34 {
		t.Errorf("facts AK: name %x", f.AKName)
	}
}

// TestEnrollSWTPM enrolls an swtpm manufactured by swtpm_setup, whose EK
// certificate swtpm_localca issued: the chain is verified against the local
// CA's root and issuer certificates, and refused against another root.
func TestEnrollSWTPM(t *testing.T) {
	s := tpmdevtest.StartSWTPM(t)
	a := newAgent(t, s.Open(t))
	if a.ek.Cert == nil {
		t.Fatal("swtpm_setup --create-ek-cert wrote no EK certificate at 0x01c00002")
	}
	ctx := context.Background()

	other := tpmdevtest.NewCA(t, "not swtpm")
	v, err := enroll.NewVerifier(enroll.Config{EKRoots: other.Pool(), EKIntermediates: s.EKIntermediates(), AllowedKinds: []string{enroll.KindSWTPM}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Begin(ctx, a.request(t, token)); !errors.Is(err, enroll.ErrEKUntrusted) {
		t.Fatalf("Begin with another root: %v, want ErrEKUntrusted", err)
	}

	v, err = enroll.NewVerifier(enroll.Config{EKRoots: s.EKRoots(), EKIntermediates: s.EKIntermediates(), AllowedKinds: []string{enroll.KindSWTPM}})
	if err != nil {
		t.Fatal(err)
	}
	req := a.request(t, token)
	ch, err := v.Begin(ctx, overTheWire(t, req))
	if err != nil {
		t.Fatal(err)
	}
	ans, err := a.answer(t, overTheWire(t, ch))
	if err != nil {
		t.Fatal(err)
	}
	facts, err := v.Finish(ctx, overTheWire(t, ans))
	if err != nil {
		t.Fatal(err)
	}
	checkFacts(t, req, facts)
	if facts.TPM.Manufacturer != "id:00001014" || facts.TPM.Model != "swtpm" {
		t.Errorf("TPM info from swtpm's EK certificate: %+v", facts.TPM)
	}
}

// TestFinishRefusals covers the session rules with a real challenge.
func TestFinishRefusals(t *testing.T) {
	ca := tpmdevtest.NewCA(t, "trusted")
	a := newAgent(t, openSim(t, ca.IssueEK))
	now := time.Now()
	clock := func() time.Time { return now }
	v, err := enroll.NewVerifier(enroll.Config{EKRoots: ca.Pool(), AllowedKinds: []string{enroll.KindSimulated}, Now: clock, SessionTTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	begin := func() *enroll.Challenge {
		ch, err := v.Begin(ctx, a.request(t, token))
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	cases := []struct {
		name   string
		answer func() *enroll.ChallengeAnswer
		want   error
	}{
		{"wrong secret", func() *enroll.ChallengeAnswer {
			return &enroll.ChallengeAnswer{SessionID: begin().SessionID, Secret: make([]byte, 32)}
		}, enroll.ErrAKNotInSameTPM},
		{"unknown session", func() *enroll.ChallengeAnswer {
			return &enroll.ChallengeAnswer{SessionID: "enr-aaaaaaaaaaaaaaaaaaaa", Secret: make([]byte, 32)}
		}, enroll.ErrSessionUnknown},
		{"expired session", func() *enroll.ChallengeAnswer {
			ans, err := a.answer(t, begin())
			if err != nil {
				t.Fatal(err)
			}
			now = now.Add(2 * time.Minute)
			return ans
		}, enroll.ErrSessionUnknown},
		{"session already failed once", func() *enroll.ChallengeAnswer {
			ch := begin()
			if _, err := v.Finish(ctx, &enroll.ChallengeAnswer{SessionID: ch.SessionID, Secret: []byte("guess")}); !errors.Is(err, enroll.ErrAKNotInSameTPM) {
				t.Fatalf("first guess: %v", err)
			}
			ans, err := a.answer(t, ch)
			if err != nil {
				t.Fatal(err)
			}
			return ans
		}, enroll.ErrSessionUnknown},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := v.Finish(ctx, c.answer()); !errors.Is(err, c.want) {
				t.Fatalf("Finish: %v, want %v", err, c.want)
			}
		})
	}
}

func TestVerifyCSROnly(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ec384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	good := softwareCSR(t, ec)
	bad := append([]byte(nil), good...)
	bad[len(bad)-5] ^= 1
	cases := []struct {
		name string
		req  *enroll.Request
		want error
	}{
		{"P-256 CSR", &enroll.Request{Token: token, CSR: good, TPMKind: enroll.KindNone}, nil},
		{"PEM CSR", &enroll.Request{Token: token, CSR: pemCSR(good), TPMKind: enroll.KindNone}, nil},
		{"no token", &enroll.Request{CSR: good, TPMKind: enroll.KindNone}, enroll.ErrMalformedRequest},
		{"TPM evidence", &enroll.Request{Token: token, CSR: good, TPMKind: enroll.KindNone, TPM: &enroll.TPMEvidence{}}, enroll.ErrMalformedRequest},
		{"claims a TPM", &enroll.Request{Token: token, CSR: good, TPMKind: enroll.KindHardware}, enroll.ErrMalformedRequest},
		{"P-384 key", &enroll.Request{Token: token, CSR: softwareCSR(t, ec384), TPMKind: enroll.KindNone}, enroll.ErrMalformedRequest},
		{"bad signature", &enroll.Request{Token: token, CSR: bad, TPMKind: enroll.KindNone}, enroll.ErrCSRMismatch},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f, err := enroll.VerifyCSROnly(c.req)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("VerifyCSROnly: %v, want %v", err, c.want)
			}
			if err == nil && (f.TPMKind != enroll.KindNone || !f.TLSPublicKey.Equal(&ec.PublicKey)) {
				t.Fatalf("facts %+v", f)
			}
		})
	}
}

func pemCSR(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}
