package tpmdev_test

import (
	"bytes"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/google/go-tpm/legacy/tpm2"
)

// TestReadExtendPCRs: ExtendPCR gives H(old ‖ digest) in the SHA-256 bank,
// ReadPCRs reads more than one TPM2_PCR_Read round (eight digests) and agrees
// with the values a quote reports, and both refuse what a TPM would.
func TestReadExtendPCRs(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			d, _, _ := b.open(t)
			all := make([]int, 24)
			for i := range all {
				all[i] = 23 - i // any order; the result is by index
			}
			before, err := d.ReadPCRs(tpm2.AlgSHA256, all)
			if err != nil {
				t.Fatal(err)
			}
			if len(before) != 24 {
				t.Fatalf("read %d PCRs, want 24", len(before))
			}
			for i, v := range before {
				if len(v) != sha256.Size {
					t.Fatalf("PCR %d has %d bytes", i, len(v))
				}
			}

			m := sha256.Sum256([]byte("measured thing"))
			if err := d.ExtendPCR(16, tpm2.AlgSHA256, m[:]); err != nil {
				t.Fatal(err)
			}
			want := sha256.Sum256(append(bytes.Clone(before[16]), m[:]...))
			after, err := d.ReadPCRs(tpm2.AlgSHA256, []int{0, 16})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(after[16], want[:]) || !bytes.Equal(after[0], before[0]) || len(after) != 2 {
				t.Fatalf("after extend: PCR16 %x (want %x), PCR0 %x (was %x), %d values", after[16], want, after[0], before[0], len(after))
			}

			ak, err := d.AK()
			if err != nil {
				t.Fatal(err)
			}
			defer ak.Close()
			q, err := d.Quote(ak, tpm2.AlgSHA256, []int{16, 0}, []byte("nonce"))
			if err != nil {
				t.Fatal(err)
			}
			for i, v := range after {
				if !bytes.Equal(q.PCRs[uint32(i)], v) {
					t.Fatalf("quote reports PCR %d = %x, ReadPCRs %x", i, q.PCRs[uint32(i)], v)
				}
			}

			for _, tc := range []struct {
				name string
				err  error
				want string
			}{
				{"read PCR 24", func() error { _, err := d.ReadPCRs(tpm2.AlgSHA256, []int{24}); return err }(), "out of range"},
				{"read PCR -1", func() error { _, err := d.ReadPCRs(tpm2.AlgSHA256, []int{-1}); return err }(), "out of range"},
				{"extend PCR 24", d.ExtendPCR(24, tpm2.AlgSHA256, m[:]), "out of range"},
				{"extend short digest", d.ExtendPCR(16, tpm2.AlgSHA256, m[:20]), "tpm2_pcr_extend"},
			} {
				if tc.err == nil || !strings.Contains(tc.err.Error(), tc.want) {
					t.Errorf("%s: %v, want an error containing %q", tc.name, tc.err, tc.want)
				}
			}
		})
	}
}
