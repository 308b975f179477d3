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
//
// With dial set, every command gets a connection of its own, closed once
// its response is read. swtpm serves one client at a time (a second
// connection waits until the first closes), so holding a connection would
// lock out every other user of the TPM — tpm2-tools, a second agent
// process; loaded objects and sessions live in the TPM, not in the
// connection, so nothing is lost between commands.
type streamConn struct {
	dial    func() (net.Conn, error) // nil: conn is kept for the life of the streamConn
	conn    net.Conn
	pending []byte
}

func newStreamConn(conn net.Conn) *streamConn { return &streamConn{conn: conn} }

func newDialingStreamConn(dial func() (net.Conn, error)) *streamConn {
	return &streamConn{dial: dial}
}

func (s *streamConn) Write(p []byte) (int, error) {
	s.pending = nil
	if s.conn == nil {
		if s.dial == nil {
			return 0, net.ErrClosed
		}
		c, err := s.dial()
		if err != nil {
			return 0, err
		}
		s.conn = c
	}
	n, err := s.conn.Write(p)
	if err != nil {
		s.drop()
	}
	return n, err
}

func (s *streamConn) Read(p []byte) (int, error) {
	if len(s.pending) == 0 {
		resp, err := s.readResponse()
		if s.dial != nil || err != nil {
			s.drop()
		}
		if err != nil {
			return 0, err
		}
		s.pending = resp
	}
	n := copy(p, s.pending)
	s.pending = s.pending[n:]
	return n, nil
}

func (s *streamConn) readResponse() ([]byte, error) {
	if s.conn == nil {
		return nil, fmt.Errorf("read tpm response: no command outstanding")
	}
	hdr := make([]byte, tpmHeaderSize)
	if _, err := io.ReadFull(s.conn, hdr); err != nil {
		return nil, fmt.Errorf("read tpm response header: %w", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	if size < tpmHeaderSize || size > maxResponseSize {
		return nil, fmt.Errorf("tpm response size %d out of range", size)
	}
	resp := make([]byte, size)
	copy(resp, hdr)
	if _, err := io.ReadFull(s.conn, resp[tpmHeaderSize:]); err != nil {
		return nil, fmt.Errorf("read tpm response body: %w", err)
	}
	return resp, nil
}

// drop closes the current connection: after a per-command exchange, or
// after an error, when the stream's framing can no longer be trusted (a
// kept connection is not redialled: later commands fail).
func (s *streamConn) drop() {
	if s.conn != nil {
		_ = s.conn.Close()
		if s.dial != nil {
			s.conn = nil
		}
	}
}

func (s *streamConn) Close() error {
	s.dial = nil
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}
