package tpmdev

import (
	"fmt"
	"io"
	"sort"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
)

// MaxPCR is the highest PCR index of a PC Client TPM (PCRs 0..23).
const MaxPCR = 23

// ReadPCRs reads the selected PCRs of bank hash, by index. A TPM returns at
// most eight digests per TPM2_PCR_Read; this reads in as many rounds as
// needed while holding the device lock, so no other command of this Device
// runs in between (a PCR may still be extended by other software through a
// resource manager). For values that must match a quote use Quote, which
// reads them in the same locked section as it quotes.
func (d *Device) ReadPCRs(hash tpm2.Algorithm, pcrs []int) (map[int][]byte, error) {
	sel := tpm2.PCRSelection{Hash: hash, PCRs: append([]int(nil), pcrs...)}
	sort.Ints(sel.PCRs)
	for _, p := range sel.PCRs {
		if p < 0 || p > MaxPCR {
			return nil, fmt.Errorf("tpm2_pcr_read: PCR %d out of range 0..%d", p, MaxPCR)
		}
	}
	out := make(map[int][]byte, len(sel.PCRs))
	err := d.with(func(rw io.ReadWriter) error {
		got, err := client.ReadPCRs(rw, sel)
		if err != nil {
			return err
		}
		for i, v := range got.GetPcrs() {
			out[int(i)] = v
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("tpm2_pcr_read: %w", err)
	}
	return out, nil
}

// ExtendPCR extends PCR pcr of bank hash with digest (which must have the
// bank's digest size): new = H(old ‖ digest). Tests use it to change a
// device's measured state; the agent itself never extends PCRs.
func (d *Device) ExtendPCR(pcr int, hash tpm2.Algorithm, digest []byte) error {
	if pcr < 0 || pcr > MaxPCR {
		return fmt.Errorf("tpm2_pcr_extend: PCR %d out of range 0..%d", pcr, MaxPCR)
	}
	err := d.with(func(rw io.ReadWriter) error {
		return tpm2.PCRExtend(rw, tpmutil.Handle(pcr), hash, digest, "")
	})
	if err != nil {
		return fmt.Errorf("tpm2_pcr_extend: %w", err)
	}
	return nil
}
