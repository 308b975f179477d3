package tpmdev

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
)

// tpmHeaderSize is the size of a TPM 2.0 response header: tag (2), size
// (4), response code (4).
const tpmHeaderSize = 10

// maxResponseSize bounds a response read from the network; real responses
// are at most a few KiB (TPM2_PT_MAX_RESPONSE_SIZE is usually 4096).
const maxResponseSize = 64 << 10

// streamConn adapts a stream socket carrying raw TPM commands (swtpm's
// server port) to the write-one-command/read-one-response io.ReadWriter that
// go-tpm expects. go-tpm's tpmutil.RunCommandRaw issues a single Read for
// the whole response, which on a socket may return a partial response, so
// Read collects the complete response (framed by the size in its header)
// before returning it.
type streamConn struct {
	conn    net.Conn
	pending []byte
}

func newStreamConn(conn net.Conn) *streamConn { return &streamConn{conn: conn} }

func (s *streamConn) Write(p []byte) (int, error) {
	s.pending = nil
	return s.conn.Write(p)
}

func (s *streamConn) Read(p []byte) (int, error) {
	if len(s.pending) == 0 {
		hdr := make([]byte, tpmHeaderSize)
		if _, err := io.ReadFull(s.conn, hdr); err != nil {
			return 0, fmt.Errorf("read tpm response header: %w", err)
		}
		size := binary.BigEndian.Uint32(hdr[2:6])
		if size < tpmHeaderSize || size > maxResponseSize {
			return 0, fmt.Errorf("tpm response size %d out of range", size)
		}
		resp := make([]byte, size)
		copy(resp, hdr)
		if _, err := io.ReadFull(s.conn, resp[tpmHeaderSize:]); err != nil {
			return 0, fmt.Errorf("read tpm response body: %w", err)
		}
		s.pending = resp
	}
	n := copy(p, s.pending)
	s.pending = s.pending[n:]
	return n, nil
}

func (s *streamConn) Close() error { return s.conn.Close() }
