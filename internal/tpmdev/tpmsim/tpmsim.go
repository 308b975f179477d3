package tpmsim

import (
	"crypto"
	"fmt"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"

	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
)

// IssueEKCert issues a DER certificate for the simulator's EK public key,
// the way a TPM manufacturer does on its production line.
type IssueEKCert func(ekPub crypto.PublicKey) ([]byte, error)

// Open starts a freshly manufactured simulator (new random seeds). When
// issue is not nil, Open provisions an EK certificate: it derives the RSA
// EK, asks issue for a certificate over it, and writes that into NV at the
// standard index 0x01c00002 (owner-authorised here; a real TPM's index is
// platform-created and write-locked).
func Open(issue IssueEKCert) (*tpmdev.Device, error) {
	sim, err := simulator.Get()
	if err != nil {
		return nil, fmt.Errorf("start tpm simulator: %w", err)
	}
	if issue != nil {
		if err := provisionEKCert(sim, issue); err != nil {
			_ = sim.Close()
			return nil, err
		}
	}
	return tpmdev.New(sim, tpmdev.KindSimulated), nil
}

func provisionEKCert(sim *simulator.Simulator, issue IssueEKCert) error {
	ek, err := client.NewKey(sim, tpm2.HandleEndorsement, client.DefaultEKTemplateRSA())
	if err != nil {
		return fmt.Errorf("derive simulator EK: %w", err)
	}
	pub := ek.PublicKey()
	ek.Close()
	der, err := issue(pub)
	if err != nil {
		return fmt.Errorf("issue EK certificate: %w", err)
	}
	return WriteNV(sim, tpmdev.EKCertNVIndexRSA, der)
}

// nvChunk stays below every TPM's TPM2_PT_NV_BUFFER_MAX (the simulator's is
// 1024).
const nvChunk = 512

// WriteNV defines an owner-writable, owner- and auth-readable NV index of
// exactly len(data) bytes and writes data into it.
func WriteNV(rw interface {
	Read([]byte) (int, error)
	Write([]byte) (int, error)
}, index uint32, data []byte) error {
	h := tpmutil.Handle(index)
	attrs := tpm2.AttrOwnerWrite | tpm2.AttrOwnerRead | tpm2.AttrAuthRead | tpm2.AttrNoDA
	if err := tpm2.NVDefineSpace(rw, tpm2.HandleOwner, h, "", "", nil, attrs, uint16(len(data))); err != nil {
		return fmt.Errorf("define NV %#x: %w", index, err)
	}
	for off := 0; off < len(data); off += nvChunk {
		end := min(off+nvChunk, len(data))
		if err := tpm2.NVWrite(rw, tpm2.HandleOwner, h, "", data[off:end], uint16(off)); err != nil {
			return fmt.Errorf("write NV %#x at %d: %w", index, off, err)
		}
	}
	return nil
}
