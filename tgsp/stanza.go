package tgsp

import (
	"bytes"
	"crypto/hpke"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
)

// Recipient stanzas (SPEC.md §4.3). Each wraps the DEK to one recipient with
// HPKE (RFC 9180) in base mode: KEM ML-KEM-768+X25519 (X-Wing), KDF
// HKDF-SHA256, AEAD AES-256-GCM, info "tgsp/v1 dek-wrap", and the package id
// as AAD, so a stanza cannot be moved to another package. Stanzas are not
// signed: a changed stanza fails to open or yields a key that does not match
// the signed DEK commitment, and so is harmless.
const (
	stanzaTypeXWing  = 0x01
	stanzaEncSize    = 1120
	stanzaCTSize     = dekSize + 16
	stanzaSize       = 1 + keyIDSize + 2 + stanzaEncSize + 2 + stanzaCTSize
	maxStanzas       = 4096
	maxStanzaSection = 2 + maxStanzas*stanzaSize
	hpkeInfo         = "tgsp/v1 dek-wrap"
)

type stanza struct {
	keyID [keyIDSize]byte
	enc   []byte
	ct    []byte
}

var (
	hpkeKDF  = hpke.HKDFSHA256()
	hpkeAEAD = hpke.AES256GCM()
)

func wrapDEK(dek *DEK, to *RecipientPublicKey, pkgID [32]byte) (stanza, error) {
	enc, s, err := hpke.NewSender(to.k, hpkeKDF, hpkeAEAD, []byte(hpkeInfo))
	if err != nil {
		return stanza{}, fmt.Errorf("hpke setup: %w", err)
	}
	ct, err := s.Seal(pkgID[:], dek.key[:])
	if err != nil {
		return stanza{}, fmt.Errorf("hpke seal: %w", err)
	}
	return stanza{keyID: to.keyIDBytes(), enc: enc, ct: ct}, nil
}

func (st stanza) open(k *RecipientPrivateKey, pkgID [32]byte) ([]byte, error) {
	r, err := hpke.NewRecipient(st.enc, k.k, hpkeKDF, hpkeAEAD, []byte(hpkeInfo))
	if err != nil {
		return nil, err
	}
	return r.Open(pkgID[:], st.ct)
}

func encodeStanzas(sts []stanza) []byte {
	b := make([]byte, 2, 2+len(sts)*stanzaSize)
	binary.BigEndian.PutUint16(b, uint16(len(sts)))
	for _, st := range sts {
		b = append(b, stanzaTypeXWing)
		b = append(b, st.keyID[:]...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(st.enc)))
		b = append(b, st.enc...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(st.ct)))
		b = append(b, st.ct...)
	}
	return b
}

func parseStanzas(b []byte) ([]stanza, error) {
	if len(b) < 2 {
		return nil, malformed("recipient section too short")
	}
	n := int(binary.BigEndian.Uint16(b))
	if n == 0 || n > maxStanzas {
		return nil, malformed("%d recipient stanzas (want 1..%d)", n, maxStanzas)
	}
	if len(b) != 2+n*stanzaSize {
		return nil, malformed("recipient section is %d bytes, %d stanzas need %d", len(b), n, 2+n*stanzaSize)
	}
	sts := make([]stanza, n)
	r := b[2:]
	for i := range sts {
		if r[0] != stanzaTypeXWing {
			return nil, malformed("recipient stanza %d has unknown type %d", i, r[0])
		}
		copy(sts[i].keyID[:], r[1:1+keyIDSize])
		r = r[1+keyIDSize:]
		if binary.BigEndian.Uint16(r) != stanzaEncSize {
			return nil, malformed("recipient stanza %d: bad encapsulation length", i)
		}
		sts[i].enc = bytes.Clone(r[2 : 2+stanzaEncSize])
		r = r[2+stanzaEncSize:]
		if binary.BigEndian.Uint16(r) != stanzaCTSize {
			return nil, malformed("recipient stanza %d: bad wrapped-key length", i)
		}
		sts[i].ct = bytes.Clone(r[2 : 2+stanzaCTSize])
		r = r[2+stanzaCTSize:]
	}
	return sts, nil
}

// Recipients lists the key ids of the package's recipient stanzas.
func (p *Package) Recipients() []string {
	ids := make([]string, len(p.stanzas))
	for i, st := range p.stanzas {
		ids[i] = fmt.Sprintf("%x", st.keyID)
	}
	return ids
}

// UnwrapDEK recovers the DEK with a recipient's private key. It requires a
// verified signature, and accepts a DEK only if it matches the signed
// commitment.
func (p *Package) UnwrapDEK(k *RecipientPrivateKey) (*DEK, error) {
	if p.verified == nil {
		return nil, fmt.Errorf("unwrap key: %w", ErrNotVerified)
	}
	id := k.pub.keyIDBytes()
	pkgID := packageID(p.ManifestBytes)
	tried := false
	for _, st := range p.stanzas {
		if subtle.ConstantTimeCompare(st.keyID[:], id[:]) != 1 {
			continue
		}
		tried = true
		raw, err := st.open(k, pkgID)
		if err != nil {
			continue
		}
		dek, err := p.acceptDEK(raw)
		if err != nil {
			continue
		}
		return dek, nil
	}
	if tried {
		return nil, fmt.Errorf("%w: the stanza for key %s does not open to the committed key", ErrDecrypt, k.pub.KeyID())
	}
	return nil, fmt.Errorf("%w: key %s is not a recipient of this package", ErrNotRecipient, k.pub.KeyID())
}

// acceptDEK checks raw against the manifest's commitment.
func (p *Package) acceptDEK(raw []byte) (*DEK, error) {
	dek, err := newDEK(raw)
	if err != nil {
		return nil, err
	}
	c := dek.Commitment()
	if subtle.ConstantTimeCompare(c[:], p.Manifest.DEKCommitment[:]) != 1 {
		return nil, fmt.Errorf("%w: key does not match the manifest's commitment", ErrDecrypt)
	}
	return dek, nil
}

// GrantKey wraps the package's DEK to another recipient and returns the
// stanza in its wire form (SPEC.md §4.3): how a control plane that holds the
// DEK releases it to one device without re-signing the package.
func (p *Package) GrantKey(dek *DEK, to *RecipientPublicKey) ([]byte, error) {
	if _, err := p.acceptDEK(dek.key[:]); err != nil {
		return nil, err
	}
	st, err := wrapDEK(dek, to, packageID(p.ManifestBytes))
	if err != nil {
		return nil, err
	}
	return encodeStanzas([]stanza{st}), nil
}

// OpenGrant opens a key grant produced by GrantKey for this package.
func (p *Package) OpenGrant(grant []byte, k *RecipientPrivateKey) (*DEK, error) {
	sts, err := parseStanzas(grant)
	if err != nil {
		return nil, err
	}
	q := *p
	q.stanzas = sts
	return q.UnwrapDEK(k)
}
