package tpmdev

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
)

// Kind says what kind of TPM a Device talks to. The control plane records
// it; a production fleet refuses KindSimulated (and, by policy, KindSWTPM).
type Kind string

// Kinds of TPM.
const (
	KindHardware  Kind = "hardware"  // a TPM chip or firmware TPM behind a kernel device
	KindSWTPM     Kind = "swtpm"     // the swtpm emulator (integration tests, VMs)
	KindSimulated Kind = "simulated" // the in-process go-tpm-tools simulator (development only)
	KindNone      Kind = "none"      // no TPM: software key, enrolment only where fleet policy allows
)

// Valid reports whether k is one of the known kinds.
func (k Kind) Valid() bool {
	switch k {
	case KindHardware, KindSWTPM, KindSimulated, KindNone:
		return true
	}
	return false
}

// ErrClosed is returned by operations on a closed Device.
var ErrClosed = errors.New("tpmdev: device closed")

// Device is an open TPM. All TPM commands issued through it are serialised.
type Device struct {
	mu     sync.Mutex
	rw     io.ReadWriteCloser
	kind   Kind
	closed bool
	// loaded are the keys this Device may flush to make room for an
	// operation that needs transient objects of its own (evictLocked).
	loaded map[*Key]struct{}
}

// New wraps an open TPM transport that speaks the raw TPM 2.0 command
// stream (write a command, read one whole response). The Device owns rwc
// and closes it in Close.
func New(rwc io.ReadWriteCloser, kind Kind) *Device {
	return &Device{rw: rwc, kind: kind}
}

// OpenDevice opens a TPM character device such as /dev/tpmrm0 (use the
// resource manager, not /dev/tpm0, so other TPM users are not disturbed).
func OpenDevice(path string) (*Device, error) {
	rwc, err := tpmutil.OpenTPM(path)
	if err != nil {
		return nil, fmt.Errorf("open tpm %s: %w", path, err)
	}
	return New(rwc, KindHardware), nil
}

// OpenSWTPM connects to the server (command) socket of an swtpm started as
// `swtpm socket --tpm2 --server type=tcp,port=P … --flags not-need-init,startup-clear`.
// addr is "host:port" or "tcp://host:port" for TCP, or "unix:///path" for
// `--server type=unixio,path=/path`. swtpm's server socket carries the raw
// TPM command stream, not the framed Microsoft-simulator protocol that
// go-tpm's tpm2/transport/tcp speaks, so this uses a small connection that
// frames responses by the size in their header.
//
// swtpm serves one client at a time, so the Device connects for each
// command and lets go after its response: tpm2-tools (tpm2_pcrextend on a
// running device, say) can use the same swtpm meanwhile. OpenSWTPM connects
// once to fail early when nothing listens at addr.
func OpenSWTPM(addr string) (*Device, error) {
	network, address := "tcp", strings.TrimPrefix(addr, "tcp://")
	if rest, ok := strings.CutPrefix(addr, "unix://"); ok {
		network, address = "unix", rest
	}
	dial := func() (net.Conn, error) {
		c, err := net.DialTimeout(network, address, 10*time.Second)
		if err != nil {
			return nil, fmt.Errorf("connect to swtpm %s: %w", addr, err)
		}
		return c, nil
	}
	probe, err := dial()
	if err != nil {
		return nil, err
	}
	_ = probe.Close()
	return New(newDialingStreamConn(dial), KindSWTPM), nil
}

// FlushTransients flushes every transient object loaded in the TPM. A TPM
// without a resource manager (swtpm, /dev/tpm0) keeps the objects a process
// loaded after the process is gone — a SIGKILLed agent's AK and TLS key,
// say — and a few of them fill its object memory, so that every later
// Seal, Unseal or key creation fails until the TPM restarts; a kernel
// resource manager (/dev/tpmrm0) flushes them when its client's file
// closes. The TPM's one long-lived user (the agent) calls this once at
// start, before it loads anything. It flushes whatever is loaded, also
// another client's objects at that moment — harmless for tools that, like
// tpm2_pcrextend, keep none between their commands.
func (d *Device) FlushTransients() error {
	return d.with(func(rw io.ReadWriter) error {
		handles, err := client.Handles(rw, tpm2.HandleTypeTransient)
		if err != nil {
			return fmt.Errorf("list transient objects: %w", err)
		}
		for _, h := range handles {
			if err := tpm2.FlushContext(rw, h); err != nil {
				return fmt.Errorf("flush transient object %#x: %w", uint32(h), err)
			}
		}
		return nil
	})
}

// Kind returns the kind given when the Device was opened.
func (d *Device) Kind() Kind { return d.kind }

// Close closes the transport. Keys obtained from the Device should be closed
// first; afterwards every operation returns ErrClosed.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	return d.rw.Close()
}

// trackLocked records k as loaded and evictable. The caller holds d.mu.
func (d *Device) trackLocked(k *Key) {
	if d.loaded == nil {
		d.loaded = make(map[*Key]struct{})
	}
	d.loaded[k] = struct{}{}
}

// evictLocked flushes every evictable key; each is re-created from its
// template on next use. The caller holds d.mu.
func (d *Device) evictLocked() {
	for k := range d.loaded {
		if k.k != nil {
			k.k.Close()
			k.k = nil
		}
	}
	clear(d.loaded)
}

// withRoom runs fn, which needs transient object slots of its own, holding
// the device lock. A TPM without a resource manager (swtpm, the simulator,
// /dev/tpm0) holds about three loaded objects; when fn fails for want of
// object memory and this Device holds evictable keys, they are flushed and
// fn is run once more. fn must flush what it loaded before returning an
// error.
func (d *Device) withRoom(fn func(rw io.ReadWriter) error) error {
	return d.with(func(rw io.ReadWriter) error {
		err := fn(rw)
		var w tpm2.Warning
		if errors.As(err, &w) && w.Code == tpm2.RCObjectMemory && len(d.loaded) > 0 {
			d.evictLocked()
			err = fn(rw)
		}
		return err
	})
}

// with runs fn holding the device lock.
func (d *Device) with(fn func(rw io.ReadWriter) error) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	return fn(d.rw)
}
