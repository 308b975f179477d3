package enroll

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/binary"
	"fmt"

	"github.com/google/go-tpm/legacy/tpm2"
)

// tpmGeneratedValue is TPM_GENERATED_VALUE, the magic a TPM puts at the
// start of every TPMS_ATTEST it signs; a restricted key refuses to sign
// external data that starts with it.
const tpmGeneratedValue = 0xff544347

const (
	attrsKeyOfThisTPM = tpm2.FlagFixedTPM | tpm2.FlagFixedParent | tpm2.FlagSensitiveDataOrigin
	attrsAK           = attrsKeyOfThisTPM | tpm2.FlagRestricted | tpm2.FlagSign
	attrsEK           = tpm2.FlagFixedTPM | tpm2.FlagFixedParent | tpm2.FlagRestricted | tpm2.FlagDecrypt
)

// decodePublic parses a TPMT_PUBLIC and insists on its canonical encoding,
// so the Name we compute is over exactly the bytes the device sent.
func decodePublic(b []byte) (tpm2.Public, error) {
	pub, err := tpm2.DecodePublic(b)
	if err != nil {
		return pub, err
	}
	re, err := pub.Encode()
	if err != nil {
		return pub, err
	}
	if !bytes.Equal(re, b) {
		return pub, fmt.Errorf("non-canonical TPMT_PUBLIC encoding")
	}
	return pub, nil
}

func strongNameAlg(a tpm2.Algorithm) bool {
	return a == tpm2.AlgSHA256 || a == tpm2.AlgSHA384 || a == tpm2.AlgSHA512
}

// checkEK checks the EK is a storage-type (restricted decryption) key with
// the symmetric scheme credential activation needs, and returns the cipher
// block size for MakeCredential.
func checkEK(pub tpm2.Public) (symBlockSize int, err error) {
	if pub.Attributes&attrsEK != attrsEK || pub.Attributes&tpm2.FlagSign != 0 {
		return 0, fmt.Errorf("EK attributes %#x are not those of a restricted decryption key", pub.Attributes)
	}
	if !strongNameAlg(pub.NameAlg) {
		return 0, fmt.Errorf("EK name algorithm %v", pub.NameAlg)
	}
	var sym *tpm2.SymScheme
	switch pub.Type {
	case tpm2.AlgRSA:
		if pub.RSAParameters != nil {
			sym = pub.RSAParameters.Symmetric
		}
	case tpm2.AlgECC:
		if pub.ECCParameters != nil {
			sym = pub.ECCParameters.Symmetric
		}
	default:
		return 0, fmt.Errorf("EK type %v", pub.Type)
	}
	if sym == nil || sym.Alg != tpm2.AlgAES || sym.Mode != tpm2.AlgCFB || (sym.KeyBits != 128 && sym.KeyBits != 256) {
		return 0, fmt.Errorf("EK symmetric scheme is not AES-CFB")
	}
	// credactivation.Generate derives the symmetric key from symBlockSize,
	// so it is the key size in bytes.
	return int(sym.KeyBits) / 8, nil
}

// signingScheme returns the signature scheme and hash a signing key's public
// area fixes.
func signingScheme(pub tpm2.Public) (alg, hash tpm2.Algorithm, ok bool) {
	var s *tpm2.SigScheme
	switch pub.Type {
	case tpm2.AlgRSA:
		if pub.RSAParameters != nil {
			s = pub.RSAParameters.Sign
		}
	case tpm2.AlgECC:
		if pub.ECCParameters != nil {
			s = pub.ECCParameters.Sign
		}
	}
	if s == nil {
		return 0, 0, false
	}
	return s.Alg, s.Hash, true
}

func checkAK(pub tpm2.Public) error {
	if pub.Attributes&attrsAK != attrsAK {
		return fmt.Errorf("AK attributes %#x lack restricted|sign|fixedTPM|fixedParent|sensitiveDataOrigin", pub.Attributes)
	}
	if pub.Attributes&tpm2.FlagDecrypt != 0 {
		return fmt.Errorf("AK is also a decryption key")
	}
	if !strongNameAlg(pub.NameAlg) {
		return fmt.Errorf("AK name algorithm %v", pub.NameAlg)
	}
	alg, hash, ok := signingScheme(pub)
	if !ok || !strongNameAlg(hash) {
		return fmt.Errorf("AK has no signing scheme with SHA-256 or stronger")
	}
	switch {
	case pub.Type == tpm2.AlgECC && alg == tpm2.AlgECDSA:
		if c := pub.ECCParameters.CurveID; c != tpm2.CurveNISTP256 && c != tpm2.CurveNISTP384 {
			return fmt.Errorf("AK curve %v", c)
		}
	case pub.Type == tpm2.AlgRSA && (alg == tpm2.AlgRSASSA || alg == tpm2.AlgRSAPSS):
		if pub.RSAParameters.KeyBits < 2048 {
			return fmt.Errorf("AK RSA key of %d bits", pub.RSAParameters.KeyBits)
		}
	default:
		return fmt.Errorf("AK scheme %v for key type %v", alg, pub.Type)
	}
	return nil
}

func checkTLSKey(pub tpm2.Public) (*ecdsa.PublicKey, error) {
	if pub.Attributes&attrsKeyOfThisTPM != attrsKeyOfThisTPM {
		return nil, fmt.Errorf("TLS key attributes %#x lack fixedTPM|fixedParent|sensitiveDataOrigin (imported or duplicable key)", pub.Attributes)
	}
	if pub.Attributes&tpm2.FlagSign == 0 || pub.Attributes&(tpm2.FlagRestricted|tpm2.FlagDecrypt) != 0 {
		return nil, fmt.Errorf("TLS key attributes %#x are not those of an unrestricted signing-only key", pub.Attributes)
	}
	if !strongNameAlg(pub.NameAlg) {
		return nil, fmt.Errorf("TLS key name algorithm %v", pub.NameAlg)
	}
	if pub.Type != tpm2.AlgECC || pub.ECCParameters == nil || pub.ECCParameters.CurveID != tpm2.CurveNISTP256 {
		return nil, fmt.Errorf("TLS key is not an ECC NIST P-256 key")
	}
	if s := pub.ECCParameters.Sign; s != nil && s.Alg != tpm2.AlgNull && (s.Alg != tpm2.AlgECDSA || s.Hash != tpm2.AlgSHA256) {
		return nil, fmt.Errorf("TLS key scheme is not ECDSA-SHA256")
	}
	k, err := pub.Key()
	if err != nil {
		return nil, err
	}
	ec, ok := k.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("TLS key is not an ECDSA P-256 key")
	}
	return ec, nil
}

// checkCertify verifies a TPM2_Certify result: TPM-generated, type certify,
// for the TLS key's Name, signed by the AK with the AK's own scheme. It
// returns the attestation's extraData for the caller to compare.
func checkCertify(attest, sigBytes []byte, ak, tlsKey tpm2.Public) ([]byte, error) {
	if len(attest) < 6 {
		return nil, fmt.Errorf("certification too short")
	}
	if m := binary.BigEndian.Uint32(attest); m != tpmGeneratedValue {
		return nil, fmt.Errorf("certification magic %#x is not TPM_GENERATED_VALUE", m)
	}
	if typ := binary.BigEndian.Uint16(attest[4:]); typ != uint16(tpm2.TagAttestCertify) {
		return nil, fmt.Errorf("attestation type %#x is not TPM_ST_ATTEST_CERTIFY", typ)
	}
	// Check the signature before trusting anything else in the structure.
	if err := verifyTPMSignature(ak, attest, sigBytes); err != nil {
		return nil, err
	}
	ad, err := tpm2.DecodeAttestationData(attest)
	if err != nil || ad.AttestedCertifyInfo == nil {
		return nil, fmt.Errorf("decode certification: %v", err)
	}
	ok, err := ad.AttestedCertifyInfo.Name.MatchesPublic(tlsKey)
	if err != nil || !ok {
		return nil, fmt.Errorf("certification names another key than the TLS key sent")
	}
	return ad.ExtraData, nil
}

// verifyTPMSignature verifies a TPMT_SIGNATURE made by key over msg, with
// exactly the scheme and hash key's public area fixes.
func verifyTPMSignature(key tpm2.Public, msg, sigBytes []byte) error {
	buf := bytes.NewBuffer(sigBytes)
	sig, err := tpm2.DecodeSignature(buf)
	if err != nil {
		return fmt.Errorf("decode signature: %v", err)
	}
	if buf.Len() != 0 {
		return fmt.Errorf("trailing bytes after signature")
	}
	alg, hashAlg, ok := signingScheme(key)
	if !ok || sig.Alg != alg {
		return fmt.Errorf("signature algorithm %v is not the AK's", sig.Alg)
	}
	var sigHash tpm2.Algorithm
	switch {
	case sig.RSA != nil:
		sigHash = sig.RSA.HashAlg
	case sig.ECC != nil:
		sigHash = sig.ECC.HashAlg
	}
	if sigHash != hashAlg {
		return fmt.Errorf("signature hash %v is not the AK's %v", sigHash, hashAlg)
	}
	h, err := hashAlg.Hash()
	if err != nil {
		return err
	}
	hh := h.New()
	hh.Write(msg)
	digest := hh.Sum(nil)
	pub, err := key.Key()
	if err != nil {
		return err
	}
	switch alg {
	case tpm2.AlgECDSA:
		p, ok := pub.(*ecdsa.PublicKey)
		if !ok || !ecdsa.Verify(p, digest, sig.ECC.R, sig.ECC.S) {
			return fmt.Errorf("AK signature does not verify")
		}
	case tpm2.AlgRSASSA:
		p, ok := pub.(*rsa.PublicKey)
		if !ok || rsa.VerifyPKCS1v15(p, h, digest, sig.RSA.Signature) != nil {
			return fmt.Errorf("AK signature does not verify")
		}
	case tpm2.AlgRSAPSS:
		p, ok := pub.(*rsa.PublicKey)
		if !ok || rsa.VerifyPSS(p, h, digest, sig.RSA.Signature, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto}) != nil {
			return fmt.Errorf("AK signature does not verify")
		}
	default:
		return fmt.Errorf("signature algorithm %v", alg)
	}
	return nil
}
