package enrollbind

import (
	"crypto/sha256"
	"encoding/binary"
)

// Domains separate these hashes from every other use of SHA-256 in the
// system, and the two versions of the binding from each other.
const (
	domain    = "tensorguardflow enrollment tls-key certify v1"
	domainKEM = "tensorguardflow enrollment tls-key certify v2"
)

// Size is the length of QualifyingData's result (TPM2_Certify accepts up to
// the size of the largest digest the TPM supports; 32 always fits).
const Size = sha256.Size

// QualifyingData returns SHA-256(domain ‖ len ‖ token ‖ len ‖ SHA-256(csrDER)),
// lengths as 4-byte big-endian integers: the binding of an enrollment
// request without a KEM public key (agents from before package key grants).
func QualifyingData(token string, csrDER []byte) []byte {
	csrHash := sha256.Sum256(csrDER)
	return hashFields(domain, []byte(token), csrHash[:])
}

// QualifyingDataKEM is the binding of a request that carries the device's
// KEM public key (wire.EnrollRequest.KEMPublic, the key package DEKs are
// granted to): SHA-256(domainKEM ‖ len ‖ token ‖ len ‖ SHA-256(csrDER) ‖
// len ‖ SHA-256(kemPublic)), with domainKEM "… certify v2". With an empty
// kemPublic it is QualifyingData, so both sides call this one function.
//
// Swapping, adding or removing the KEM key after the TPM certified the
// request changes the value the verifier computes, and the certification
// no longer matches: the two forms have different domains, so a v1
// certification cannot pass for a v2 one or the reverse.
func QualifyingDataKEM(token string, csrDER, kemPublic []byte) []byte {
	if len(kemPublic) == 0 {
		return QualifyingData(token, csrDER)
	}
	csrHash := sha256.Sum256(csrDER)
	kemHash := sha256.Sum256(kemPublic)
	return hashFields(domainKEM, []byte(token), csrHash[:], kemHash[:])
}

func hashFields(domain string, fields ...[]byte) []byte {
	h := sha256.New()
	for _, field := range append([][]byte{[]byte(domain)}, fields...) {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(field)))
		h.Write(n[:])
		h.Write(field)
	}
	return h.Sum(nil)
}
