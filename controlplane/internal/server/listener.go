package server

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// sniffTimeout bounds how long a new connection may stay silent before its
// first byte decides TLS or plain HTTP.
const sniffTimeout = 10 * time.Second

// tlsRecordHandshake is the first byte of every TLS ClientHello.
const tlsRecordHandshake = 0x16

const refusedPlain = "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: 56\r\n\r\nplain HTTP is refused on this listener; use https:// .\r\n"

// sniffListener serves TLS and, for permitted peers, plain HTTP on one
// port. Accept returns *tls.Conn for connections that start with a TLS
// record (net/http then runs the handshake and fills Request.TLS) and the
// raw connection for plain HTTP from a permitted peer; anything else is
// answered with a short 403 and closed. Sniffing runs per connection, so a
// silent client delays nobody else.
type sniffListener struct {
	inner      net.Listener
	tlsConfig  *tls.Config
	allowPlain func(net.Addr) bool
	log        *slog.Logger

	conns     chan net.Conn
	ctx       context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup
	errMu     sync.Mutex
	err       error // why the accept loop stopped, when not by Close
}

func newSniffListener(inner net.Listener, cfg *tls.Config, allowPlain func(net.Addr) bool, log *slog.Logger) *sniffListener {
	ctx, cancel := context.WithCancel(context.Background())
	l := &sniffListener{inner: inner, tlsConfig: cfg, allowPlain: allowPlain, log: log,
		conns: make(chan net.Conn), ctx: ctx, cancel: cancel}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *sniffListener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.inner.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			l.errMu.Lock()
			l.err = err
			l.errMu.Unlock()
			l.cancel()
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.sniff(c)
		}()
	}
}

func (l *sniffListener) sniff(c net.Conn) {
	_ = c.SetReadDeadline(time.Now().Add(sniffTimeout))
	var first [1]byte
	if _, err := io.ReadFull(c, first[:]); err != nil {
		_ = c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	pc := &prefixConn{Conn: c, first: first[0], pending: true}
	var out net.Conn
	switch {
	case first[0] == tlsRecordHandshake:
		out = tls.Server(pc, l.tlsConfig)
	case l.allowPlain(c.RemoteAddr()):
		out = pc
	default:
		l.log.Debug("plain HTTP refused", "remote", c.RemoteAddr().String())
		_ = c.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = io.WriteString(c, refusedPlain)
		_ = c.Close()
		return
	}
	select {
	case l.conns <- out:
	case <-l.ctx.Done():
		_ = c.Close()
	}
}

// Accept implements net.Listener.
func (l *sniffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.ctx.Done():
		// Close cancels too, racing the accept loop's failure: read err
		// under its lock.
		l.errMu.Lock()
		err := l.err
		l.errMu.Unlock()
		if err != nil {
			return nil, err
		}
		return nil, net.ErrClosed
	}
}

// Close implements net.Listener.
func (l *sniffListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		err = l.inner.Close()
		l.cancel()
	})
	return err
}

// Addr implements net.Listener.
func (l *sniffListener) Addr() net.Addr { return l.inner.Addr() }

// wait returns once every sniffing goroutine has finished.
func (l *sniffListener) wait() { l.wg.Wait() }

// prefixConn gives back the byte the sniffer read.
type prefixConn struct {
	net.Conn
	mu      sync.Mutex
	first   byte
	pending bool
}

func (c *prefixConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.pending && len(p) > 0 {
		p[0] = c.first
		c.pending = false
		c.mu.Unlock()
		return 1, nil
	}
	c.mu.Unlock()
	return c.Conn.Read(p)
}

// loopbackOnly permits plain HTTP from loopback peers.
func loopbackOnly(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
