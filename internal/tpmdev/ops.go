package tpmdev

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
)

// Certification is what TPM2_Certify returns: the TPM-generated TPMS_ATTEST
// (type TPM_ST_ATTEST_CERTIFY) naming the certified key, and the AK's
// TPMT_SIGNATURE over it.
type Certification struct {
	Attest    []byte
	Signature []byte
}

// CertifyKey has the TPM attest, signed by the restricted AK, that key is
// loaded in this TPM; the attestation carries key's Name and qualifyingData
// (at most 64 bytes; enrollment uses enrollbind.QualifyingData).
func (d *Device) CertifyKey(key, ak *Key, qualifyingData []byte) (*Certification, error) {
	var c Certification
	err := d.with(func(rw io.ReadWriter) error {
		kk, err := key.loadLocked(rw)
		if err != nil {
			return err
		}
		akk, err := ak.loadLocked(rw)
		if err != nil {
			return err
		}
		// A null scheme makes the TPM use the AK's own scheme.
		c.Attest, c.Signature, err = tpm2.CertifyEx(rw, "", "", kk.Handle(), akk.Handle(),
			qualifyingData, tpm2.SigScheme{Alg: tpm2.AlgNull})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tpm2_certify: %w", err)
	}
	return &c, nil
}

// ErrCredentialBlob is returned for a credential blob or encrypted secret
// that is not a well-formed TPM2B.
var ErrCredentialBlob = errors.New("tpmdev: malformed credential challenge")

// ActivateCredential answers a MakeCredential challenge: the TPM releases the
// secret only if ek decrypts the seed and ak's Name is the one the
// challenge was made for, which proves both live in this TPM. credBlob is a
// TPM2B_ID_OBJECT and encSecret a TPM2B_ENCRYPTED_SECRET, each with its
// 2-byte size prefix, as go-tpm's credactivation.Generate produces them.
func (d *Device) ActivateCredential(ak *Key, ek *EK, credBlob, encSecret []byte) ([]byte, error) {
	cred, err := unwrap2B(credBlob)
	if err != nil {
		return nil, err
	}
	secret, err := unwrap2B(encSecret)
	if err != nil {
		return nil, err
	}
	var out []byte
	err = d.with(func(rw io.ReadWriter) error {
		akk, err := ak.loadLocked(rw)
		if err != nil {
			return err
		}
		ekk, err := ek.loadLocked(rw)
		if err != nil {
			return err
		}
		// The EK's authPolicy (TCG default) is PolicySecret(TPM_RH_ENDORSEMENT).
		sess, err := client.NewEKSession(rw)
		if err != nil {
			return err
		}
		defer sess.Close()
		ekAuth, err := sess.Auth()
		if err != nil {
			return err
		}
		akAuth := tpm2.AuthCommand{Session: tpm2.HandlePasswordSession, Attributes: tpm2.AttrContinueSession}
		out, err = tpm2.ActivateCredentialUsingAuth(rw, []tpm2.AuthCommand{akAuth, ekAuth},
			akk.Handle(), ekk.Handle(), cred, secret)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("tpm2_activatecredential: %w", err)
	}
	return out, nil
}

func unwrap2B(b []byte) ([]byte, error) {
	if len(b) < 2 || int(binary.BigEndian.Uint16(b)) != len(b)-2 {
		return nil, ErrCredentialBlob
	}
	return b[2:], nil
}

// Quote is a TPM2_Quote: the TPMS_ATTEST (type TPM_ST_ATTEST_QUOTE) with the
// nonce as extraData and the digest of the selected PCRs, the AK's
// TPMT_SIGNATURE over it, and the PCR values read right after (the verifier
// recomputes the digest from them; it must not trust them otherwise).
type Quote struct {
	Attest    []byte
	Signature []byte
	Hash      tpm2.Algorithm
	PCRs      map[uint32][]byte
}

// Quote signs the selected PCRs of bank hash together with nonce (at most 64
// bytes) with the restricted AK.
func (d *Device) Quote(ak *Key, hash tpm2.Algorithm, pcrs []int, nonce []byte) (*Quote, error) {
	sel := tpm2.PCRSelection{Hash: hash, PCRs: append([]int(nil), pcrs...)}
	sort.Ints(sel.PCRs)
	var q *Quote
	err := d.with(func(rw io.ReadWriter) error {
		akk, err := ak.loadLocked(rw)
		if err != nil {
			return err
		}
		pq, err := akk.Quote(sel, nonce)
		if err != nil {
			return err
		}
		q = &Quote{Attest: pq.GetQuote(), Signature: pq.GetRawSig(), Hash: hash, PCRs: pq.GetPcrs().GetPcrs()}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tpm2_quote: %w", err)
	}
	return q, nil
}
