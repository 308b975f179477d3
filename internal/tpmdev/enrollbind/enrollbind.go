package enrollbind

import (
	"crypto/sha256"
	"encoding/binary"
)

// domain separates this hash from every other use of SHA-256 in the system.
const domain = "tensorguardflow enrollment tls-key certify v1"

// Size is the length of QualifyingData's result (TPM2_Certify accepts up to
// the size of the largest digest the TPM supports; 32 always fits).
const Size = sha256.Size

// QualifyingData returns SHA-256(domain ‖ len ‖ token ‖ len ‖ SHA-256(csrDER)),
// lengths as 4-byte big-endian integers.
func QualifyingData(token string, csrDER []byte) []byte {
	csrHash := sha256.Sum256(csrDER)
	h := sha256.New()
	for _, field := range [][]byte{[]byte(domain), []byte(token), csrHash[:]} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(field)))
		h.Write(n[:])
		h.Write(field)
	}
	return h.Sum(nil)
}
