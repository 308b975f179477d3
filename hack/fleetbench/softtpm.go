package main

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
)

// softTPM emulates, in software, the few TPM 2.0 commands a device runs for
// enrollment and attestation, so that one load generator can stand in for
// a thousand TPM devices (the go-tpm-tools simulator is one per process).
// It is a benchmark tool, not a TPM: its keys are ordinary Go keys, which a
// real verifier can only tell apart by the "simulated" TPM kind the device
// declares, and it reproduces the wire formats, not the TPM's protections.
//
// What it produces is byte for byte what a TPM returns for the same keys:
//   - public areas: internal/tpmdev's AKTemplate and TLSKeyTemplate and the
//     TCG default ECC P-256 EK template (go-tpm-tools' DefaultEKTemplateECC),
//     each with its unique field set to the key's point, encoded as
//     TPMT_PUBLIC; Names are nameAlg ‖ SHA-256(TPMT_PUBLIC);
//   - TPM2_Certify: a TPMS_ATTEST of type TPM_ST_ATTEST_CERTIFY naming the
//     TLS key (Name and qualified name), extraData = the qualifying data,
//     signed by the AK (TPMT_SIGNATURE, ECDSA-SHA256);
//   - TPM2_ActivateCredential: the ECC EK's half of TPM 2.0 Part 1 §24
//     (seed by ECDH and KDFe "IDENTITY", KDFa "STORAGE" and "INTEGRITY"
//     keyed with the AK's Name, the integrity HMAC checked before the
//     AES-128-CFB credential is decrypted);
//   - TPM2_Quote: a TPMS_ATTEST of type TPM_ST_ATTEST_QUOTE over the
//     selected SHA-256 PCRs, extraData = the nonce, a TPM clock that never
//     goes back, constant reset and restart counts and firmware version.
//
// The PCR values are constant per device (derived from a random seed), as
// on a device that does not reboot, so the verifier's baseline holds.
type softTPM struct {
	ek  *ecdh.PrivateKey
	ak  *ecdsa.PrivateKey
	tls *ecdsa.PrivateKey

	ekPub, akPub, tlsPub []byte // TPMT_PUBLIC
	akName               tpm2.HashValue
	akQName, tlsQName    tpm2.HashValue
	tlsName              tpm2.HashValue
	pcrs                 [softPCRs][]byte

	start      time.Time
	clockStart uint64 // TPM Clock (ms) at start

	mu        sync.Mutex
	lastClock uint64
}

// Constant TPM state of every softTPM.
const (
	softPCRs         = 24
	softResetCount   = 7
	softRestartCount = 0
	softFirmware     = 0x2000_0000_0001_0001
	tpmGenerated     = 0xff544347 // TPM_GENERATED_VALUE
	// handleOwner is TPM_RH_OWNER, the parent of the owner-hierarchy
	// primaries (AK, TLS key) in their qualified names.
	handleOwner = 0x40000001
)

// newSoftTPM manufactures a device: an ECC P-256 EK, the AK and the TLS key,
// and its PCR values.
func newSoftTPM() (*softTPM, error) {
	ek, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	ak, err1 := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tlsKey, err2 := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	t := &softTPM{ek: ek, ak: ak, tls: tlsKey, start: time.Now()}
	var seed [32]byte
	_, _ = rand.Read(seed[:])
	for i := range t.pcrs {
		h := sha256.Sum256(append(seed[:], byte(i)))
		t.pcrs[i] = h[:]
	}
	var c [8]byte
	_, _ = rand.Read(c[:])
	t.clockStart = 1<<32 + binary.BigEndian.Uint64(c[:])>>40 // a device that has run for a while

	if t.ekPub, _, err = publicArea(client.DefaultEKTemplateECC(), ek.PublicKey().Bytes()); err != nil {
		return nil, fmt.Errorf("EK: %w", err)
	}
	akPubKey, err := ak.PublicKey.Bytes()
	if err != nil {
		return nil, err
	}
	if t.akPub, t.akName, err = publicArea(tpmdev.AKTemplate(), akPubKey); err != nil {
		return nil, fmt.Errorf("AK: %w", err)
	}
	tlsPubKey, err := tlsKey.PublicKey.Bytes()
	if err != nil {
		return nil, err
	}
	if t.tlsPub, t.tlsName, err = publicArea(tpmdev.TLSKeyTemplate(), tlsPubKey); err != nil {
		return nil, fmt.Errorf("TLS key: %w", err)
	}
	t.akQName, t.tlsQName = qualifiedName(t.akName), qualifiedName(t.tlsName)
	return t, nil
}

// publicArea encodes tmpl with its unique field set to the uncompressed
// P-256 point and returns it with its Name.
func publicArea(tmpl tpm2.Public, point []byte) ([]byte, tpm2.HashValue, error) {
	if len(point) != 65 || point[0] != 4 || tmpl.ECCParameters == nil {
		return nil, tpm2.HashValue{}, errors.New("not an uncompressed P-256 point for an ECC template")
	}
	params := *tmpl.ECCParameters
	params.Point = tpm2.ECPoint{XRaw: point[1:33], YRaw: point[33:]}
	tmpl.ECCParameters = &params
	pub, err := tmpl.Encode()
	if err != nil {
		return nil, tpm2.HashValue{}, err
	}
	n, err := tmpl.Name()
	if err != nil {
		return nil, tpm2.HashValue{}, err
	}
	return pub, *n.Digest, nil
}

// qualifiedName is the qualified name of a primary key of the owner
// hierarchy: nameAlg ‖ H(TPM_RH_OWNER ‖ Name) (TPM 2.0 Part 1 §16).
func qualifiedName(name tpm2.HashValue) tpm2.HashValue {
	enc, _ := name.Encode()
	h := sha256.New()
	_ = binary.Write(h, binary.BigEndian, uint32(handleOwner))
	h.Write(enc)
	return tpm2.HashValue{Alg: tpm2.AlgSHA256, Value: h.Sum(nil)}
}

// clockInfo is a TPMS_CLOCK_INFO whose Clock never goes back.
func (t *softTPM) clockInfo() tpm2.ClockInfo {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := max(t.clockStart+uint64(time.Since(t.start).Milliseconds()), t.lastClock)
	t.lastClock = c
	return tpm2.ClockInfo{Clock: c, ResetCount: softResetCount, RestartCount: softRestartCount, Safe: 1}
}

// signAK signs a TPMS_ATTEST with the AK and returns the TPMT_SIGNATURE
// (ECDSA, SHA-256, r and s as 32-byte TPM2B_ECC_PARAMETERs).
func (t *softTPM) signAK(attest []byte) ([]byte, error) {
	d := sha256.Sum256(attest)
	r, s, err := ecdsa.Sign(rand.Reader, t.ak, d[:])
	if err != nil {
		return nil, err
	}
	out := binary.BigEndian.AppendUint16(nil, uint16(tpm2.AlgECDSA))
	out = binary.BigEndian.AppendUint16(out, uint16(tpm2.AlgSHA256))
	out = binary.BigEndian.AppendUint16(out, 32)
	out = append(out, r.FillBytes(make([]byte, 32))...)
	out = binary.BigEndian.AppendUint16(out, 32)
	return append(out, s.FillBytes(make([]byte, 32))...), nil
}

// attest builds and signs a TPMS_ATTEST with the common header.
func (t *softTPM) attest(ad tpm2.AttestationData) (attest, sig []byte, err error) {
	ad.Magic = tpmGenerated
	ad.QualifiedSigner = tpm2.Name{Digest: &t.akQName}
	ad.ClockInfo = t.clockInfo()
	ad.FirmwareVersion = softFirmware
	if attest, err = ad.Encode(); err != nil {
		return nil, nil, err
	}
	sig, err = t.signAK(attest)
	return attest, sig, err
}

// Certify is TPM2_Certify of the TLS key by the AK.
func (t *softTPM) Certify(qualifyingData []byte) (attest, sig []byte, err error) {
	return t.attest(tpm2.AttestationData{
		Type:      tpm2.TagAttestCertify,
		ExtraData: qualifyingData,
		AttestedCertifyInfo: &tpm2.CertifyInfo{
			Name:          tpm2.Name{Digest: &t.tlsName},
			QualifiedName: tpm2.Name{Digest: &t.tlsQName},
		},
	})
}

// Quote is TPM2_Quote of the SHA-256 PCRs pcrs over nonce; it returns the
// TPMS_ATTEST, its TPMT_SIGNATURE and the PCR values.
func (t *softTPM) Quote(pcrs []int, nonce []byte) (attest, sig []byte, values map[int][]byte, err error) {
	sel := slices.Sorted(slices.Values(pcrs))
	sel = slices.Compact(sel)
	values = make(map[int][]byte, len(sel))
	h := sha256.New()
	for _, i := range sel {
		if i < 0 || i >= softPCRs {
			return nil, nil, nil, fmt.Errorf("PCR %d out of range", i)
		}
		values[i] = t.pcrs[i]
		h.Write(t.pcrs[i])
	}
	attest, sig, err = t.attest(tpm2.AttestationData{
		Type:      tpm2.TagAttestQuote,
		ExtraData: nonce,
		AttestedQuoteInfo: &tpm2.QuoteInfo{
			PCRSelection: tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: sel},
			PCRDigest:    h.Sum(nil),
		},
	})
	return attest, sig, values, err
}

// Credential activation labels (TPM 2.0 Part 1 §24, Part 1 Annex C/D).
const (
	labelIdentity  = "IDENTITY"
	labelStorage   = "STORAGE"
	labelIntegrity = "INTEGRITY"
	// ekSymKeyBits is the EK template's symmetric key (AES-128-CFB).
	ekSymKeyBits = 128
)

// errActivation stands for the TPM's refusal (TPM_RC_INTEGRITY and the
// like): the challenge was not made for this EK and AK.
var errActivation = errors.New("softtpm: credential does not activate with this EK and AK")

// ActivateCredential is TPM2_ActivateCredential with the EK and the AK:
// credBlob is a TPM2B_ID_OBJECT and encSecret a TPM2B_ENCRYPTED_SECRET
// (each with its size prefix), as the control plane sends them.
func (t *softTPM) ActivateCredential(credBlob, encSecret []byte) ([]byte, error) {
	idObject, err := unwrap2B(credBlob)
	if err != nil {
		return nil, err
	}
	point, err := unwrap2B(encSecret)
	if err != nil {
		return nil, err
	}
	// The encrypted secret of an ECC EK is the ephemeral TPMS_ECC_POINT.
	ephX, rest, err := take2B(point)
	if err != nil {
		return nil, err
	}
	ephY, rest, err := take2B(rest)
	if err != nil || len(rest) != 0 || len(ephX) > 32 || len(ephY) > 32 {
		return nil, fmt.Errorf("softtpm: malformed ECC point in the encrypted secret")
	}
	eph, err := ecdh.P256().NewPublicKey(slices.Concat([]byte{4}, leftPad(ephX, 32), leftPad(ephY, 32)))
	if err != nil {
		return nil, fmt.Errorf("softtpm: ephemeral point: %w", err)
	}
	z, err := t.ek.ECDH(eph)
	if err != nil {
		return nil, err
	}
	ekX := t.ek.PublicKey().Bytes()[1:33]
	seed, err := tpm2.KDFe(tpm2.AlgSHA256, z, labelIdentity, leftPad(ephX, 32), ekX, sha256.Size*8)
	if err != nil {
		return nil, err
	}

	integrity, encIdentity, err := take2B(idObject)
	if err != nil {
		return nil, err
	}
	akName, err := t.akName.Encode()
	if err != nil {
		return nil, err
	}
	macKey, err := tpm2.KDFa(tpm2.AlgSHA256, seed, labelIntegrity, nil, nil, sha256.Size*8)
	if err != nil {
		return nil, err
	}
	mac := hmac.New(sha256.New, macKey)
	mac.Write(encIdentity)
	mac.Write(akName)
	if !hmac.Equal(mac.Sum(nil), integrity) {
		return nil, errActivation
	}
	symKey, err := tpm2.KDFa(tpm2.AlgSHA256, seed, labelStorage, akName, nil, ekSymKeyBits)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(symKey)
	if err != nil {
		return nil, err
	}
	cv := make([]byte, len(encIdentity))
	//lint:ignore SA1019 TPM 2.0 encrypts the credential with CFB (Part 1 §24.4); there is no choice.
	cipher.NewCFBDecrypter(block, make([]byte, aes.BlockSize)).XORKeyStream(cv, encIdentity)
	secret, rest, err := take2B(cv)
	if err != nil || len(rest) != 0 {
		return nil, errActivation
	}
	return secret, nil
}

func unwrap2B(b []byte) ([]byte, error) {
	v, rest, err := take2B(b)
	if err != nil || len(rest) != 0 {
		return nil, fmt.Errorf("softtpm: malformed TPM2B of %d bytes", len(b))
	}
	return v, nil
}

// take2B splits a TPM2B (2-byte big-endian size, then the bytes) off b.
func take2B(b []byte) (v, rest []byte, err error) {
	var u tpmutil.U16Bytes
	buf := bytes.NewBuffer(b)
	if err := tpmutil.UnpackBuf(buf, &u); err != nil {
		return nil, nil, fmt.Errorf("softtpm: malformed TPM2B: %w", err)
	}
	return u, buf.Bytes(), nil
}

func leftPad(b []byte, n int) []byte {
	if len(b) >= n {
		return b
	}
	return append(make([]byte, n-len(b)), b...)
}
