package tpmdev

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"testing"

	"github.com/google/go-tpm/tpmutil"
)

// TestStreamConnFraming delivers TPM responses in small fragments, as a
// socket may, and checks that go-tpm's single Read sees each one whole and
// that consecutive responses do not bleed into each other.
func TestStreamConnFraming(t *testing.T) {
	cases := []struct {
		name     string
		bodySize int
		fragment int
	}{
		{"header only", 0, 1},
		{"small in 3-byte pieces", 20, 3},
		{"large in 7-byte pieces", 3000, 7},
	}
	client, server := net.Pipe()
	sc := newStreamConn(client)
	defer sc.Close()
	go func() {
		defer server.Close()
		for _, c := range cases {
			hdr := make([]byte, tpmHeaderSize)
			if _, err := io.ReadFull(server, hdr); err != nil {
				return
			}
			cmd := make([]byte, binary.BigEndian.Uint32(hdr[2:6])-tpmHeaderSize)
			if _, err := io.ReadFull(server, cmd); err != nil {
				return
			}
			resp := response(c.bodySize)
			for off := 0; off < len(resp); off += c.fragment {
				if _, err := server.Write(resp[off:min(off+c.fragment, len(resp))]); err != nil {
					return
				}
			}
		}
	}()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8} // TPM2_GetRandom(8)
			got, err := tpmutil.RunCommandRaw(sc, cmd)
			if err != nil {
				t.Fatal(err)
			}
			if want := response(c.bodySize); !bytes.Equal(got, want) {
				t.Fatalf("got %d bytes, want %d", len(got), len(want))
			}
		})
	}
}

func response(bodySize int) []byte {
	r := make([]byte, tpmHeaderSize+bodySize)
	binary.BigEndian.PutUint16(r, 0x8001)
	binary.BigEndian.PutUint32(r[2:], uint32(len(r)))
	for i := tpmHeaderSize; i < len(r); i++ {
		r[i] = byte(i)
	}
	return r
}
