package broker

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mochi-mqtt/server/v2/listeners"
)

// listener adapts a net.Listener to mochi's listeners.Listener. For TLS it
// completes the handshake itself, under a deadline, before mochi sees the
// connection, so a client that fails verification never reaches the MQTT
// layer, and a client that never finishes cannot hold a goroutine forever.
type listener struct {
	id       string
	ln       net.Listener
	tls      *tls.Config // nil for the plain development listener
	deadline time.Duration
	log      *slog.Logger

	ctx       context.Context // cancelled by Close: aborts handshakes
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup
}

func newListener(id string, ln net.Listener, cfg *tls.Config, deadline time.Duration) *listener {
	ctx, cancel := context.WithCancel(context.Background())
	return &listener{id: id, ln: ln, tls: cfg, deadline: deadline, ctx: ctx, cancel: cancel, log: slog.Default()}
}

var _ listeners.Listener = (*listener)(nil)

func (l *listener) ID() string       { return l.id }
func (l *listener) Address() string  { return l.ln.Addr().String() }
func (l *listener) Protocol() string { return "tcp" }

func (l *listener) Init(log *slog.Logger) error {
	l.log = log
	return nil
}

func (l *listener) Serve(establish listeners.EstablishFn) {
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.handle(conn, establish)
		}()
	}
}

func (l *listener) handle(conn net.Conn, establish listeners.EstablishFn) {
	// The deadline covers the handshake and the CONNECT packet; mochi
	// replaces it with the keepalive deadline once the client is connected.
	_ = conn.SetDeadline(time.Now().Add(l.deadline))
	if l.tls != nil {
		tc := tls.Server(conn, l.tls)
		ctx, cancel := context.WithTimeout(l.ctx, l.deadline)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			l.log.Debug("tls handshake refused", "remote", conn.RemoteAddr().String(), "error", err)
			_ = tc.Close()
			return
		}
		conn = tc
	}
	if err := establish(l.id, conn); err != nil {
		l.log.Debug("client connection ended", "remote", conn.RemoteAddr().String(), "error", err)
	}
}

// wait returns when every accepted connection has been handed back.
func (l *listener) wait() { l.wg.Wait() }

func (l *listener) Close(closeClients listeners.CloseFn) {
	l.closeOnce.Do(func() {
		l.cancel()
		_ = l.ln.Close()
		closeClients(l.id)
	})
}
