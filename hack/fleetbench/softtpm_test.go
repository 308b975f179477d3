package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"math/big"
	"slices"
	"testing"

	"github.com/google/go-tpm-tools/client"
	legacy "github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/legacy/tpm2/credactivation"
	"github.com/google/go-tpm/tpm2"

	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmsim"
)

// The control plane's verifiers live in controlplane/internal, which hack/
// cannot import. These tests check the emulation with the same public
// libraries and the same checks (enroll/tpmpublic.go, attest/quote.go and
// attest/verify.go), and against the go-tpm-tools simulator, a real TPM
// implementation: same encodings, same lengths, same qualified names. The
// benchmark itself proves the rest against the real control plane (every
// device enrolls, every verdict must be trusted).

var policyPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7}

// decodeCanonical is enroll.decodePublic: a TPMT_PUBLIC that re-encodes to
// the same bytes.
func decodeCanonical(t *testing.T, what string, b []byte) legacy.Public {
	t.Helper()
	p, err := legacy.DecodePublic(b)
	if err != nil {
		t.Fatalf("%s: decode: %v", what, err)
	}
	if re, err := p.Encode(); err != nil || !bytes.Equal(re, b) {
		t.Fatalf("%s: not canonically encoded", what)
	}
	return p
}

func TestSoftTPMPublicAreas(t *testing.T) {
	dev, err := newSoftTPM()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		pub  []byte
		tmpl legacy.Public
		key  any
	}{
		{"EK", dev.ekPub, client.DefaultEKTemplateECC(), dev.ek.PublicKey()},
		{"AK", dev.akPub, tpmdev.AKTemplate(), &dev.ak.PublicKey},
		{"TLS key", dev.tlsPub, tpmdev.TLSKeyTemplate(), &dev.tls.PublicKey},
	} {
		p := decodeCanonical(t, c.what, c.pub)
		if !p.MatchesTemplate(c.tmpl) {
			t.Errorf("%s: public area does not match its template", c.what)
		}
		k, err := p.Key()
		if err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		ec, err := k.(*ecdsa.PublicKey).ECDH()
		if err != nil {
			t.Fatal(err)
		}
		var want []byte
		switch w := c.key.(type) {
		case *ecdsa.PublicKey:
			want, _ = w.Bytes()
		case interface{ Bytes() []byte }:
			want = w.Bytes()
		}
		if !bytes.Equal(ec.Bytes(), want) {
			t.Errorf("%s: the public area holds another key", c.what)
		}
	}
}

func TestSoftTPMActivateCredential(t *testing.T) {
	dev, err := newSoftTPM()
	if err != nil {
		t.Fatal(err)
	}
	ekPub, err := decodeCanonical(t, "EK", dev.ekPub).Key()
	if err != nil {
		t.Fatal(err)
	}
	akName, err := decodeCanonical(t, "AK", dev.akPub).Name()
	if err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	// What enroll.Verifier.Begin does: EK symmetric AES-128, so 16.
	blob, encSecret, err := credactivation.Generate(akName.Digest, ekPub, 16, secret)
	if err != nil {
		t.Fatal(err)
	}
	got, err := dev.ActivateCredential(blob, encSecret)
	if err != nil {
		t.Fatalf("activate: %v", err)
	}
	if !bytes.Equal(got, secret) {
		t.Fatal("activation released another secret")
	}

	// A challenge for another AK, or for another EK, must not activate.
	other, err := newSoftTPM()
	if err != nil {
		t.Fatal(err)
	}
	otherAK := legacy.HashValue{Alg: legacy.AlgSHA256, Value: other.akName.Value}
	blob2, enc2, err := credactivation.Generate(&otherAK, ekPub, 16, secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dev.ActivateCredential(blob2, enc2); !errors.Is(err, errActivation) {
		t.Errorf("credential for another AK: err = %v, want errActivation", err)
	}
	if _, err := other.ActivateCredential(blob, encSecret); !errors.Is(err, errActivation) {
		t.Errorf("credential for another EK: err = %v, want errActivation", err)
	}
	tampered := bytes.Clone(blob)
	tampered[len(tampered)-1] ^= 1
	if _, err := dev.ActivateCredential(tampered, encSecret); !errors.Is(err, errActivation) {
		t.Errorf("tampered credential: err = %v, want errActivation", err)
	}
}

// verifySig is attest.akKey.verify for the ECDSA AK: a canonically encoded
// TPMT_SIGNATURE, ECDSA with SHA-256, by the key of akPub.
func verifySig(t *testing.T, akPub legacy.Public, msg, sig []byte) {
	t.Helper()
	s, err := tpm2.Unmarshal[tpm2.TPMTSignature](sig)
	if err != nil {
		t.Fatalf("signature: %v", err)
	}
	e, err := s.Signature.ECDSA()
	if err != nil || s.SigAlg != tpm2.TPMAlgECDSA || e.Hash != tpm2.TPMAlgSHA256 {
		t.Fatalf("signature is not ECDSA-SHA256: %v", err)
	}
	if n := 2 + 2 + 2 + len(e.SignatureR.Buffer) + 2 + len(e.SignatureS.Buffer); n != len(sig) {
		t.Fatalf("signature not canonically encoded")
	}
	k, err := akPub.Key()
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(msg)
	if !ecdsa.Verify(k.(*ecdsa.PublicKey), d[:], new(big.Int).SetBytes(e.SignatureR.Buffer), new(big.Int).SetBytes(e.SignatureS.Buffer)) {
		t.Fatal("signature does not verify with the AK")
	}
}

// parseQuote is attest.parseQuote: a canonically encoded TPM-generated quote.
func parseQuote(t *testing.T, b []byte) (*tpm2.TPMSAttest, *tpm2.TPMSQuoteInfo) {
	t.Helper()
	a, err := tpm2.Unmarshal[tpm2.TPMSAttest](b)
	if err != nil {
		t.Fatalf("quote: %v", err)
	}
	if a.Magic != tpm2.TPMGeneratedValue || a.Type != tpm2.TPMSTAttestQuote {
		t.Fatalf("quote magic %#x type %#x", uint32(a.Magic), uint16(a.Type))
	}
	info, err := a.Attested.Quote()
	if err != nil {
		t.Fatal(err)
	}
	n := 4 + 2 + 2 + len(a.QualifiedSigner.Buffer) + 2 + len(a.ExtraData.Buffer) + 8 + 4 + 4 + 1 + 8 + 4 + 2 + len(info.PCRDigest.Buffer)
	for _, sel := range info.PCRSelect.PCRSelections {
		n += 2 + 1 + len(sel.PCRSelect)
	}
	if n != len(b) {
		t.Fatal("quote not canonically encoded")
	}
	return a, info
}

func TestSoftTPMQuote(t *testing.T) {
	dev, err := newSoftTPM()
	if err != nil {
		t.Fatal(err)
	}
	akPub := decodeCanonical(t, "AK", dev.akPub)
	var lastClock uint64
	for range 3 {
		nonce := make([]byte, 32)
		_, _ = rand.Read(nonce)
		q, sig, values, err := dev.Quote(policyPCRs, nonce)
		if err != nil {
			t.Fatal(err)
		}
		verifySig(t, akPub, q, sig)
		a, info := parseQuote(t, q)
		if !bytes.Equal(a.ExtraData.Buffer, nonce) {
			t.Error("extraData is not the nonce")
		}
		sels := info.PCRSelect.PCRSelections
		if len(sels) != 1 || sels[0].Hash != tpm2.TPMAlgSHA256 {
			t.Fatalf("selection %+v is not one SHA-256 bank", sels)
		}
		var quoted []int
		for i, b := range sels[0].PCRSelect {
			for bit := range 8 {
				if b&(1<<bit) != 0 {
					quoted = append(quoted, 8*i+bit)
				}
			}
		}
		if !slices.Equal(quoted, policyPCRs) {
			t.Errorf("quoted PCRs %v, want %v", quoted, policyPCRs)
		}
		h := sha256.New()
		for _, i := range policyPCRs {
			if len(values[i]) != sha256.Size {
				t.Fatalf("PCR %d value of %d bytes", i, len(values[i]))
			}
			h.Write(values[i])
		}
		if !bytes.Equal(h.Sum(nil), info.PCRDigest.Buffer) {
			t.Error("PCR values do not hash to the quoted digest")
		}
		ci := a.ClockInfo
		if ci.Clock < lastClock || ci.ResetCount != softResetCount || ci.RestartCount != softRestartCount {
			t.Errorf("clock info %+v after clock %d", ci, lastClock)
		}
		lastClock = ci.Clock
	}
}

func TestSoftTPMCertify(t *testing.T) {
	dev, err := newSoftTPM()
	if err != nil {
		t.Fatal(err)
	}
	qd := sha256.Sum256([]byte("qualifying data"))
	att, sig, err := dev.Certify(qd[:])
	if err != nil {
		t.Fatal(err)
	}
	akPub, tlsPub := decodeCanonical(t, "AK", dev.akPub), decodeCanonical(t, "TLS key", dev.tlsPub)
	// enroll.checkCertify.
	verifySig(t, akPub, att, sig)
	ad, err := legacy.DecodeAttestationData(att)
	if err != nil || ad.Type != legacy.TagAttestCertify || ad.AttestedCertifyInfo == nil {
		t.Fatalf("certify: %v", err)
	}
	if ok, err := ad.AttestedCertifyInfo.Name.MatchesPublic(tlsPub); err != nil || !ok {
		t.Errorf("certification names another key: %v", err)
	}
	if !bytes.Equal(ad.ExtraData, qd[:]) {
		t.Error("extraData is not the qualifying data")
	}
}

// TestSoftTPMLikeSimulator compares the emulation with the go-tpm-tools
// simulator running internal/tpmdev's own code: the public areas differ
// only in their points, the TPMS_ATTESTs have the same layout and length,
// and the qualified names follow the same rule.
func TestSoftTPMLikeSimulator(t *testing.T) {
	sim, err := tpmsim.Open(nil)
	if err != nil {
		t.Fatalf("go-tpm-tools simulator: %v", err)
	}
	defer sim.Close()
	ak, err := sim.AK()
	if err != nil {
		t.Fatal(err)
	}
	defer ak.Close()
	tlsKey, err := sim.TLSKey()
	if err != nil {
		t.Fatal(err)
	}
	defer tlsKey.Close()
	dev, err := newSoftTPM()
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		what      string
		sim, soft []byte
	}{{"AK", ak.PublicArea(), dev.akPub}, {"TLS key", tlsKey.PublicArea(), dev.tlsPub}} {
		sp, op := decodeCanonical(t, c.what, c.sim), decodeCanonical(t, c.what, c.soft)
		if len(c.sim) != len(c.soft) || !op.MatchesTemplate(sp) {
			t.Errorf("%s: public area differs from the simulator's beyond the point", c.what)
		}
	}

	nonce := make([]byte, 32)
	_, _ = rand.Read(nonce)
	sq, err := sim.Quote(ak, legacy.AlgSHA256, policyPCRs, nonce)
	if err != nil {
		t.Fatal(err)
	}
	oq, _, _, err := dev.Quote(policyPCRs, nonce)
	if err != nil {
		t.Fatal(err)
	}
	if len(sq.Attest) != len(oq) || len(sq.Signature) < 70 {
		t.Errorf("quote of %d bytes, the simulator's has %d", len(oq), len(sq.Attest))
	}
	sa, sinfo := parseQuote(t, sq.Attest)
	oa, oinfo := parseQuote(t, oq)
	if !bytes.Equal(sinfo.PCRSelect.PCRSelections[0].PCRSelect, oinfo.PCRSelect.PCRSelections[0].PCRSelect) {
		t.Error("PCR selection bitmaps differ")
	}
	akName, err := ak.Name()
	if err != nil {
		t.Fatal(err)
	}
	simAKName := legacy.HashValue{Alg: legacy.AlgSHA256, Value: akName[2:]}
	wantQN, _ := qualifiedName(simAKName).Encode()
	if !bytes.Equal(sa.QualifiedSigner.Buffer, wantQN) {
		t.Errorf("the simulator's qualified signer %x is not %x: qualifiedName is wrong", sa.QualifiedSigner.Buffer, wantQN)
	}
	ownQN, _ := dev.akQName.Encode()
	if !bytes.Equal(oa.QualifiedSigner.Buffer, ownQN) {
		t.Error("the quote's qualified signer is not the AK's qualified name")
	}

	qd := sha256.Sum256([]byte("qualifying data"))
	sc, err := sim.CertifyKey(tlsKey, ak, qd[:])
	if err != nil {
		t.Fatal(err)
	}
	oc, _, err := dev.Certify(qd[:])
	if err != nil {
		t.Fatal(err)
	}
	if len(sc.Attest) != len(oc) {
		t.Errorf("certification of %d bytes, the simulator's has %d", len(oc), len(sc.Attest))
	}
	sad, err := legacy.DecodeAttestationData(sc.Attest)
	if err != nil {
		t.Fatal(err)
	}
	tlsName, err := tlsKey.Name()
	if err != nil {
		t.Fatal(err)
	}
	wantTLSQN := qualifiedName(legacy.HashValue{Alg: legacy.AlgSHA256, Value: tlsName[2:]})
	if got := sad.AttestedCertifyInfo.QualifiedName.Digest; got == nil || !bytes.Equal(got.Value, wantTLSQN.Value) {
		t.Error("the simulator's certified qualified name differs from qualifiedName's")
	}
}
