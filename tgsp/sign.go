package tgsp

import (
	"crypto/ed25519"
	"crypto/sha512"
	"fmt"

	"github.com/cloudflare/circl/sign/mldsa/mldsa65"
)

// The composite signature follows the IETF LAMPS construction for
// id-MLDSA65-Ed25519-SHA512 (draft-ietf-lamps-pq-composite-sigs):
//
//	M' = Prefix || Label || len(ctx) || ctx || SHA-512(M)
//	sig = ML-DSA-65.Sign(sk_pq, M', ctx=Label) || Ed25519.Sign(sk_ed, M')
//
// and a signature is valid only if both halves verify. ctx is TGSP's own
// application context, so a TGSP signature can never be replayed as a
// composite signature over the same bytes in another protocol.
const (
	compositePrefix = "CompositeAlgorithmSignatures2025"
	compositeLabel  = "COMPSIG-MLDSA65-Ed25519-SHA512"
	signatureCtx    = "tgsp-manifest-v1"

	mldsaSigSize = mldsa65.SignatureSize
	// SignatureSize is the length of a TGSP composite signature.
	SignatureSize = mldsaSigSize + ed25519.SignatureSize
)

// compositeMessage builds M' for message m.
func compositeMessage(m []byte) []byte {
	ph := sha512.Sum512(m)
	out := make([]byte, 0, len(compositePrefix)+len(compositeLabel)+1+len(signatureCtx)+len(ph))
	out = append(out, compositePrefix...)
	out = append(out, compositeLabel...)
	out = append(out, byte(len(signatureCtx)))
	out = append(out, signatureCtx...)
	return append(out, ph[:]...)
}

// sign produces the composite signature of m. ML-DSA uses its hedged
// (randomized) mode; Ed25519 is deterministic.
func (k *SignerPrivateKey) sign(m []byte) ([]byte, error) {
	mp := compositeMessage(m)
	sig := make([]byte, SignatureSize)
	if err := mldsa65.SignTo(k.pq, mp, []byte(compositeLabel), true, sig[:mldsaSigSize]); err != nil {
		return nil, fmt.Errorf("ml-dsa-65 sign: %w", err)
	}
	copy(sig[mldsaSigSize:], ed25519.Sign(k.ed, mp))
	return sig, nil
}

// verify reports whether sig is a valid composite signature of m by k. Both
// halves are always checked; either failing fails the whole.
func (k *SignerPublicKey) verify(m, sig []byte) error {
	if len(sig) != SignatureSize {
		return fmt.Errorf("%w: signature is %d bytes, want %d", ErrBadSignature, len(sig), SignatureSize)
	}
	mp := compositeMessage(m)
	pqOK := mldsa65.Verify(k.pq, mp, []byte(compositeLabel), sig[:mldsaSigSize])
	edOK := ed25519.Verify(k.ed, mp, sig[mldsaSigSize:])
	switch {
	case !pqOK && !edOK:
		return fmt.Errorf("%w: ML-DSA-65 and Ed25519 halves both invalid", ErrBadSignature)
	case !pqOK:
		return fmt.Errorf("%w: ML-DSA-65 half invalid", ErrBadSignature)
	case !edOK:
		return fmt.Errorf("%w: Ed25519 half invalid", ErrBadSignature)
	}
	return nil
}
