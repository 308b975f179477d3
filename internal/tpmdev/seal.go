package tpmdev

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
)

// MaxSealSize is the most data Seal accepts: the size of a sealed data
// object's sensitive part (MAX_SYM_DATA, 128 bytes on every TPM 2.0).
const MaxSealSize = 128

const templateLabelStorage = "tensorguardflow/storage/v1"

// ErrSealedBlob is returned for a sealed blob that does not parse, that is
// not a sealed data object of this package's template, or that this TPM
// refuses to load (made by another TPM or under another storage key,
// altered, or the TPM was cleared since).
var ErrSealedBlob = errors.New("tpmdev: sealed blob refused")

// StorageKeyTemplate is the template of the storage key Seal creates sealed
// objects under: an ECC NIST P-256 restricted decryption primary key in the
// owner hierarchy (AES-128-CFB for its children), fixedTPM, fixedParent and
// sensitiveDataOrigin, usable with an empty password, like go-tpm-tools'
// SRK but with a labelled unique field (so it is this project's key, not
// one other software derives). Being a primary key, it is re-derived
// identically after a reboot and nothing of it is stored.
func StorageKeyTemplate() tpm2.Public {
	return tpm2.Public{
		Type:       tpm2.AlgECC,
		NameAlg:    tpm2.AlgSHA256,
		Attributes: tpm2.FlagStorageDefault | tpm2.FlagNoDA,
		ECCParameters: &tpm2.ECCParams{
			Symmetric: &tpm2.SymScheme{Alg: tpm2.AlgAES, KeyBits: 128, Mode: tpm2.AlgCFB},
			CurveID:   tpm2.CurveNISTP256,
			Point:     labelledUnique(templateLabelStorage),
		},
	}
}

// sealedTemplate is the public part of a sealed data object: a keyedhash
// object with a null scheme (it can neither sign nor decrypt; its only use
// is TPM2_Unseal), fixedTPM and fixedParent (never duplicated out of this
// TPM or away from the storage key), readable with an empty password
// (userWithAuth) and exempt from dictionary-attack lockout (noDA: there is
// no password to guess, so a failure must not lock other keys out).
func sealedTemplate() tpm2.Public {
	return tpm2.Public{
		Type:    tpm2.AlgKeyedHash,
		NameAlg: tpm2.AlgSHA256,
		Attributes: tpm2.FlagFixedTPM | tpm2.FlagFixedParent |
			tpm2.FlagUserWithAuth | tpm2.FlagNoDA,
		KeyedHashParameters: &tpm2.KeyedHashParams{Alg: tpm2.AlgNull},
	}
}

// SealedBlob is data sealed by a TPM: the public area (TPMT_PUBLIC) and the
// private area (the TPM2B_PRIVATE's content) of a sealed data object under
// the storage key. The private area is encrypted and integrity-protected
// with keys derived from the storage key's seed, which never leaves the
// TPM: the blob is useless anywhere but in the TPM that sealed it, and a
// changed byte makes TPM2_Load refuse it. It is not secret by itself; keep
// it in a file only its owner can read anyway.
type SealedBlob struct {
	Public  []byte
	Private []byte
}

// sealedBlobMagic starts a marshalled SealedBlob (and versions it).
var sealedBlobMagic = []byte("TGSEAL1\x00")

// MarshalBinary encodes the blob: "TGSEAL1\0" ‖ u16 len ‖ public ‖ u16 len
// ‖ private.
func (b SealedBlob) MarshalBinary() ([]byte, error) {
	if len(b.Public) == 0 || len(b.Public) > 0xffff || len(b.Private) == 0 || len(b.Private) > 0xffff {
		return nil, fmt.Errorf("%w: empty or oversized area", ErrSealedBlob)
	}
	out := bytes.Clone(sealedBlobMagic)
	out = binary.BigEndian.AppendUint16(out, uint16(len(b.Public)))
	out = append(out, b.Public...)
	out = binary.BigEndian.AppendUint16(out, uint16(len(b.Private)))
	return append(out, b.Private...), nil
}

// UnmarshalBinary decodes what MarshalBinary wrote; trailing data is an
// error.
func (b *SealedBlob) UnmarshalBinary(data []byte) error {
	rest, ok := bytes.CutPrefix(data, sealedBlobMagic)
	if !ok {
		return fmt.Errorf("%w: not a sealed blob", ErrSealedBlob)
	}
	var areas [2][]byte
	for i := range areas {
		if len(rest) < 2 {
			return fmt.Errorf("%w: truncated", ErrSealedBlob)
		}
		n := int(binary.BigEndian.Uint16(rest))
		if n == 0 || len(rest) < 2+n {
			return fmt.Errorf("%w: truncated", ErrSealedBlob)
		}
		areas[i], rest = bytes.Clone(rest[2:2+n]), rest[2+n:]
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: trailing data", ErrSealedBlob)
	}
	b.Public, b.Private = areas[0], areas[1]
	return nil
}

// Seal has the TPM seal data (1 to MaxSealSize bytes): TPM2_Create of a
// sealed data object (sealedTemplate) under the storage key
// (StorageKeyTemplate), which is created for the call and flushed after.
// Only this TPM, with its owner hierarchy not cleared since, can Unseal the
// result. Seal needs one free object slot; on a TPM without a resource
// manager the Device makes room by flushing its evictable keys.
func (d *Device) Seal(data []byte) (SealedBlob, error) {
	if len(data) == 0 || len(data) > MaxSealSize {
		return SealedBlob{}, fmt.Errorf("tpm seal: %d bytes of data, want 1 to %d", len(data), MaxSealSize)
	}
	var blob SealedBlob
	err := d.withRoom(func(rw io.ReadWriter) error {
		srk, err := client.NewKey(rw, tpm2.HandleOwner, StorageKeyTemplate())
		if err != nil {
			return fmt.Errorf("storage key: %w", err)
		}
		defer srk.Close()
		priv, pub, _, _, _, err := tpm2.CreateKeyWithSensitive(rw, srk.Handle(), tpm2.PCRSelection{}, "", "", sealedTemplate(), data)
		if err != nil {
			return fmt.Errorf("tpm2_create: %w", err)
		}
		blob = SealedBlob{Public: pub, Private: priv}
		return nil
	})
	if err != nil {
		return SealedBlob{}, fmt.Errorf("tpm seal: %w", err)
	}
	return blob, nil
}

// Unseal returns the data sealed in blob: it re-creates the storage key,
// loads the sealed object under it (TPM2_Load checks the private area's
// integrity and binding to the public area and to this storage key), and
// runs TPM2_Unseal; everything is flushed before it returns. A blob that
// is not a sealed data object of Seal's template is refused before the
// TPM sees it; one the TPM refuses to load is ErrSealedBlob. Unseal needs
// two free object slots (see Seal).
func (d *Device) Unseal(blob SealedBlob) ([]byte, error) {
	pub, err := tpm2.DecodePublic(blob.Public)
	if err != nil {
		return nil, fmt.Errorf("tpm unseal: %w: public area: %v", ErrSealedBlob, err)
	}
	if want := sealedTemplate(); pub.Type != want.Type || pub.NameAlg != want.NameAlg || pub.Attributes != want.Attributes ||
		len(pub.AuthPolicy) != 0 || pub.KeyedHashParameters == nil || pub.KeyedHashParameters.Alg != tpm2.AlgNull {
		return nil, fmt.Errorf("tpm unseal: %w: not a sealed data object of this package's template", ErrSealedBlob)
	}
	var data []byte
	err = d.withRoom(func(rw io.ReadWriter) error {
		srk, err := client.NewKey(rw, tpm2.HandleOwner, StorageKeyTemplate())
		if err != nil {
			return fmt.Errorf("storage key: %w", err)
		}
		h, _, err := tpm2.Load(rw, srk.Handle(), "", blob.Public, blob.Private)
		// The storage key is needed only to load: free its slot first.
		srk.Close()
		if err != nil {
			var w tpm2.Warning
			if errors.As(err, &w) {
				return fmt.Errorf("tpm2_load: %w", err) // out of memory and the like: not the blob's fault
			}
			return fmt.Errorf("%w: tpm2_load: %v", ErrSealedBlob, err)
		}
		defer flush(rw, h)
		data, err = tpm2.Unseal(rw, h, "")
		if err != nil {
			return fmt.Errorf("tpm2_unseal: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tpm unseal: %w", err)
	}
	return data, nil
}

func flush(rw io.ReadWriter, h tpmutil.Handle) { _ = tpm2.FlushContext(rw, h) }
