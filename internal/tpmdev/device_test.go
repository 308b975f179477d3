package tpmdev_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"testing"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/legacy/tpm2/credactivation"

	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmdevtest"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmsim"
)

// backend opens one kind of real TPM for a test and returns the pool its EK
// certificate must chain to.
type backend struct {
	name string
	kind tpmdev.Kind
	open func(t *testing.T) (*tpmdev.Device, *x509.CertPool, *x509.CertPool)
}

var backends = []backend{
	{"simulator", tpmdev.KindSimulated, func(t *testing.T) (*tpmdev.Device, *x509.CertPool, *x509.CertPool) {
		ca := tpmdevtest.NewCA(t, "sim EK CA")
		d, err := tpmsim.Open(ca.IssueEK)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = d.Close() })
		return d, ca.Pool(), x509.NewCertPool()
	}},
	{"swtpm", tpmdev.KindSWTPM, func(t *testing.T) (*tpmdev.Device, *x509.CertPool, *x509.CertPool) {
		s := tpmdevtest.StartSWTPM(t)
		return s.Open(t), s.EKRoots(), s.EKIntermediates()
	}},
}

func TestDevice(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			d, roots, inter := b.open(t)
			if d.Kind() != b.kind {
				t.Fatalf("kind %q, want %q", d.Kind(), b.kind)
			}
			ek, err := d.EK()
			if err != nil {
				t.Fatal(err)
			}
			defer ek.Close()
			if ek.Cert == nil || ek.CertNVIndex != tpmdev.EKCertNVIndexRSA {
				t.Fatalf("EK cert %d bytes from NV %#x, want one from %#x", len(ek.Cert), ek.CertNVIndex, tpmdev.EKCertNVIndexRSA)
			}
			cert, err := x509.ParseCertificate(ek.Cert)
			if err != nil {
				t.Fatal(err)
			}
			// EK certificates carry a critical SAN that Go does not handle;
			// the chain itself must verify once that is accounted for.
			cert.UnhandledCriticalExtensions = nil
			if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Fatalf("EK cert chain: %v", err)
			}

			ak, err := d.AK()
			if err != nil {
				t.Fatal(err)
			}
			defer ak.Close()
			tls, err := d.TLSKey()
			if err != nil {
				t.Fatal(err)
			}
			defer tls.Close()
			akPub := decodePublic(t, ak.PublicArea())
			if akPub.Attributes&(tpm2.FlagRestricted|tpm2.FlagSign|tpm2.FlagFixedTPM) != tpm2.FlagRestricted|tpm2.FlagSign|tpm2.FlagFixedTPM {
				t.Fatalf("AK attributes %v", akPub.Attributes)
			}
			if _, err := ak.Signer(); err == nil {
				t.Fatal("restricted AK exposed as a crypto.Signer")
			}

			t.Run("tls key signs", func(t *testing.T) {
				signer, err := tls.Signer()
				if err != nil {
					t.Fatal(err)
				}
				digest := sha256.Sum256([]byte("hello"))
				sig, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
				if err != nil {
					t.Fatal(err)
				}
				if !ecdsa.VerifyASN1(tls.Public().(*ecdsa.PublicKey), digest[:], sig) {
					t.Fatal("TPM signature does not verify")
				}
				csr, err := tpmdev.CreateCSR(signer, pkix.Name{CommonName: "dev-test"})
				if err != nil {
					t.Fatal(err)
				}
				req, err := x509.ParseCertificateRequest(csr)
				if err != nil {
					t.Fatal(err)
				}
				if err := req.CheckSignature(); err != nil {
					t.Fatal(err)
				}
				if !req.PublicKey.(*ecdsa.PublicKey).Equal(tls.Public()) {
					t.Fatal("CSR is for another key")
				}
			})

			t.Run("certify", func(t *testing.T) {
				qd := []byte("qualifying data, 32 bytes long!!")
				c, err := d.CertifyKey(tls, ak, qd)
				if err != nil {
					t.Fatal(err)
				}
				ad, err := tpm2.DecodeAttestationData(c.Attest)
				if err != nil {
					t.Fatal(err)
				}
				if ad.Type != tpm2.TagAttestCertify || !bytes.Equal(ad.ExtraData, qd) {
					t.Fatalf("attest type %v extraData %q", ad.Type, ad.ExtraData)
				}
				if ok, err := ad.AttestedCertifyInfo.Name.MatchesPublic(decodePublic(t, tls.PublicArea())); err != nil || !ok {
					t.Fatalf("certified name does not match the TLS key (%v)", err)
				}
				verifyECDSA(t, ak.Public(), c.Attest, c.Signature)
			})

			t.Run("activate credential", func(t *testing.T) {
				name, err := ak.Name()
				if err != nil {
					t.Fatal(err)
				}
				hv := &tpm2.HashValue{Alg: tpm2.Algorithm(binary.BigEndian.Uint16(name)), Value: name[2:]}
				secret := []byte("0123456789abcdef0123456789abcdef")
				blob, enc, err := credactivation.Generate(hv, ek.Public(), 16, secret)
				if err != nil {
					t.Fatal(err)
				}
				got, err := d.ActivateCredential(ak, ek, blob, enc)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, secret) {
					t.Fatalf("activated %x, want %x", got, secret)
				}
				// A credential for another key's name is refused by the TPM.
				tlsName, _ := tls.Name()
				other := &tpm2.HashValue{Alg: tpm2.AlgSHA256, Value: tlsName[2:]}
				blob, enc, err = credactivation.Generate(other, ek.Public(), 16, secret)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := d.ActivateCredential(ak, ek, blob, enc); err == nil {
					t.Fatal("activated a credential made for another key")
				}
				if _, err := d.ActivateCredential(ak, ek, blob[:5], enc); err == nil {
					t.Fatal("accepted a truncated credential blob")
				}
			})

			t.Run("quote", func(t *testing.T) {
				nonce := []byte("fresh nonce")
				q, err := d.Quote(ak, tpm2.AlgSHA256, []int{7, 0}, nonce)
				if err != nil {
					t.Fatal(err)
				}
				ad, err := tpm2.DecodeAttestationData(q.Attest)
				if err != nil {
					t.Fatal(err)
				}
				if ad.Type != tpm2.TagAttestQuote || !bytes.Equal(ad.ExtraData, nonce) || len(q.PCRs) != 2 {
					t.Fatalf("quote type %v extraData %q pcrs %d", ad.Type, ad.ExtraData, len(q.PCRs))
				}
				verifyECDSA(t, ak.Public(), q.Attest, q.Signature)
			})
		})
	}
}

// TestRestartSameKeys shows that the AK, the TLS key and the EK come back
// identical after the TPM (and the process) restarts, because they are
// derived from the hierarchy seeds and fixed templates. swtpm keeps its
// seeds in its state directory; the simulator cannot persist them.
func TestRestartSameKeys(t *testing.T) {
	s := tpmdevtest.StartSWTPM(t)
	publics := func() (ak, tls, ek []byte) {
		d := s.Open(t)
		defer d.Close()
		a, err := d.AK()
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		k, err := d.TLSKey()
		if err != nil {
			t.Fatal(err)
		}
		defer k.Close()
		e, err := d.EK()
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		return a.PublicArea(), k.PublicArea(), e.PublicArea()
	}
	ak1, tls1, ek1 := publics()
	s.Restart()
	ak2, tls2, ek2 := publics()
	if !bytes.Equal(ak1, ak2) {
		t.Error("AK changed across restart")
	}
	if !bytes.Equal(tls1, tls2) {
		t.Error("TLS key changed across restart")
	}
	if !bytes.Equal(ek1, ek2) {
		t.Error("EK changed across restart")
	}
	if bytes.Equal(ak1, tls1) {
		t.Error("AK and TLS key are the same key")
	}
}

func decodePublic(t *testing.T, b []byte) tpm2.Public {
	t.Helper()
	p, err := tpm2.DecodePublic(b)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func verifyECDSA(t *testing.T, pub crypto.PublicKey, msg, tpmtSig []byte) {
	t.Helper()
	sig, err := tpm2.DecodeSignature(bytes.NewBuffer(tpmtSig))
	if err != nil {
		t.Fatal(err)
	}
	if sig.Alg != tpm2.AlgECDSA || sig.ECC.HashAlg != tpm2.AlgSHA256 {
		t.Fatalf("signature alg %v", sig.Alg)
	}
	digest := sha256.Sum256(msg)
	if !ecdsa.Verify(pub.(*ecdsa.PublicKey), digest[:], sig.ECC.R, sig.ECC.S) {
		t.Fatal("AK signature does not verify")
	}
}

// TestSWTPMShared: two clients use one swtpm at once — swtpm serves one
// connection at a time, so a Device that held its connection would block
// the other (as it blocked tpm2_pcrextend on a running agent). The first
// Device's AK, loaded before the second extends a PCR, still quotes
// afterwards, and the quote shows the extension.
func TestSWTPMShared(t *testing.T) {
	s := tpmdevtest.StartSWTPM(t)
	agent := s.Open(t)
	ak, err := agent.AK()
	if err != nil {
		t.Fatal(err)
	}
	defer ak.Close()
	before, err := agent.ReadPCRs(tpm2.AlgSHA256, []int{16})
	if err != nil {
		t.Fatal(err)
	}

	other := s.Open(t) // would hang if agent held the only connection
	digest := sha256.Sum256([]byte("tpm2_pcrextend by someone else"))
	done := make(chan error, 1)
	go func() { done <- other.ExtendPCR(16, tpm2.AlgSHA256, digest[:]) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a second client could not use swtpm while the first Device was open")
	}

	nonce := []byte("nonce after the other client's extend")
	q, err := agent.Quote(ak, tpm2.AlgSHA256, []int{16}, nonce)
	if err != nil {
		t.Fatalf("quote with the AK loaded before the other client's commands: %v", err)
	}
	want := sha256.Sum256(append(bytes.Clone(before[16]), digest[:]...))
	if got := q.PCRs[16]; !bytes.Equal(got, want[:]) {
		t.Fatalf("quoted PCR 16 = %x, want %x (extended by the other client)", got, want)
	}
	verifyECDSA(t, ak.Public(), q.Attest, q.Signature)
}
