package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// fleetDevice is one enrolled device without a TPM: its software key and
// certificate chain, written by the orchestrator for the load generator.
type fleetDevice struct {
	ID      string `json:"id"`
	CertPEM string `json:"cert_pem"`
	KeyPEM  string `json:"key_pem"`
}

type fleetFile struct {
	Tenant  string        `json:"tenant"`
	Devices []fleetDevice `json:"devices"`
}

// loadResult is what the load generator reports on stdout, one JSON line
// after the "connected" marker.
type loadResult struct {
	Clients      int     `json:"clients"`
	Connected    int     `json:"connected"`
	Failed       int     `json:"failed"`
	FirstError   string  `json:"first_error,omitempty"`
	Concurrency  int     `json:"concurrency"`
	WallSeconds  float64 `json:"wall_seconds"`
	ConnectsPerS float64 `json:"connects_per_s"`
	// ConnackP50Ms and ConnackP99Ms: dial to CONNACK; PubackP50Ms: dial to
	// the PUBACK of the retained online status.
	ConnackP50Ms float64 `json:"connack_p50_ms"`
	ConnackP99Ms float64 `json:"connack_p99_ms"`
	PubackP50Ms  float64 `json:"puback_p50_ms"`
	// LoadCPUSeconds is the load generator's own CPU for the connect phase
	// (its TLS client work shares the machine with the broker).
	LoadCPUSeconds float64 `json:"load_cpu_seconds"`
	// TLS is the version and key exchange the first connection negotiated
	// (a Go server offers hybrid post-quantum X25519MLKEM768, which Debian
	// 12's OpenSSL does not: the handshakes differ in cost).
	TLS string `json:"tls"`
}

// Markers on the load generator's stdout.
const (
	markStart     = "phase connect-start"
	markConnected = "phase connected "
	markClosed    = "phase closed"
)

// runLoad is `fleetbench load`: a separate process so that its cost is not
// the broker's. It speaks just enough MQTT 3.1.1 over crypto/tls to do what
// an agent does on connect — mTLS handshake, CONNECT with an offline Will
// (QoS 1, retained) on the device's status topic, a retained QoS 1 online
// status, PUBACK — with one goroutine per open connection draining it and
// one shared ticker sending PINGREQs, instead of paho's several goroutines
// and buffers per client. It holds the connections until stdin closes,
// then sends DISCONNECT on each.
func runLoad(args []string) error {
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	addr := fs.String("addr", "", "broker host:port (mTLS)")
	caFile := fs.String("ca", "", "PEM file of the CAs the broker's certificate chains to")
	devFile := fs.String("devices", "", "devices JSON written by the orchestrator")
	conc := fs.Int("conc", 16, "concurrent connection attempts")
	keepAlive := fs.Duration("keepalive", 30*time.Second, "MQTT keepalive (the agent's default)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	caPEM, err := os.ReadFile(*caFile)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("%s: no certificate", *caFile)
	}
	b, err := os.ReadFile(*devFile)
	if err != nil {
		return err
	}
	var fleet fleetFile
	if err := json.Unmarshal(b, &fleet); err != nil {
		return err
	}
	// Parse every key pair before the clock starts.
	certs := make([]tls.Certificate, len(fleet.Devices))
	for i, d := range fleet.Devices {
		if certs[i], err = tls.X509KeyPair([]byte(d.CertPEM), []byte(d.KeyPEM)); err != nil {
			return fmt.Errorf("device %s: %w", d.ID, err)
		}
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return err
	}

	conns := make([]net.Conn, len(fleet.Devices))
	connack := make([]time.Duration, len(fleet.Devices))
	puback := make([]time.Duration, len(fleet.Devices))
	errs := make([]error, len(fleet.Devices))
	var next atomic.Int64
	var drain sync.WaitGroup
	var tlsInfo string // written by the worker that connects device 0, read after wg.Wait
	cpu0, _ := readUsage(os.Getpid())
	fmt.Println(markStart)
	start := time.Now()
	var wg sync.WaitGroup
	for range *conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(fleet.Devices) {
					return
				}
				d := fleet.Devices[i]
				cfg := &tls.Config{
					MinVersion: tls.VersionTLS12, RootCAs: roots, ServerName: host,
					Certificates: []tls.Certificate{certs[i]},
				}
				conns[i], connack[i], puback[i], errs[i] = connectDevice(*addr, cfg, fleet.Tenant, d.ID, *keepAlive)
				if errs[i] == nil {
					c := conns[i]
					if i == 0 {
						cs := c.(*tls.Conn).ConnectionState()
						tlsInfo = tls.VersionName(cs.Version) + " " + cs.CurveID.String()
					}
					drain.Go(func() { _, _ = io.Copy(io.Discard, c) })
				}
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	cpu1, _ := readUsage(os.Getpid())

	res := loadResult{Clients: len(fleet.Devices), Concurrency: *conc, WallSeconds: wall.Seconds(),
		LoadCPUSeconds: (cpu1.cpu - cpu0.cpu).Seconds(), TLS: tlsInfo}
	var okConnack, okPuback []time.Duration
	for i, err := range errs {
		if err != nil {
			res.Failed++
			if res.FirstError == "" {
				res.FirstError = fmt.Sprintf("%s: %v", fleet.Devices[i].ID, err)
			}
			continue
		}
		res.Connected++
		okConnack = append(okConnack, connack[i])
		okPuback = append(okPuback, puback[i])
	}
	res.ConnectsPerS = float64(res.Connected) / wall.Seconds()
	res.ConnackP50Ms, res.ConnackP99Ms = ms(pct(okConnack, 50)), ms(pct(okConnack, 99))
	res.PubackP50Ms = ms(pct(okPuback, 50))
	out, _ := json.Marshal(res)
	fmt.Println(markConnected + string(out))

	// Hold: ping every connection at half the keepalive until stdin closes.
	held := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		close(held)
	}()
	t := time.NewTicker(*keepAlive / 2)
	defer t.Stop()
hold:
	for {
		select {
		case <-held:
			break hold
		case <-t.C:
			for _, c := range conns {
				if c != nil {
					_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
					_, _ = c.Write([]byte{0xc0, 0x00}) // PINGREQ
				}
			}
		}
	}
	for _, c := range conns {
		if c != nil {
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Write([]byte{0xe0, 0x00}) // DISCONNECT: the broker drops the Will
			_ = c.Close()
		}
	}
	drain.Wait()
	fmt.Println(markClosed)
	return nil
}

// connectDevice dials, handshakes, sends CONNECT and the retained online
// status and waits for CONNACK and PUBACK.
func connectDevice(addr string, cfg *tls.Config, tenant, device string, keepAlive time.Duration) (net.Conn, time.Duration, time.Duration, error) {
	start := time.Now()
	raw, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, 0, 0, err
	}
	_ = raw.SetDeadline(time.Now().Add(30 * time.Second))
	c := tls.Client(raw, cfg)
	fail := func(err error) (net.Conn, time.Duration, time.Duration, error) {
		_ = c.Close()
		return nil, 0, 0, err
	}
	if err := c.Handshake(); err != nil {
		return fail(fmt.Errorf("tls: %w", err))
	}
	topic := mqttacl.StatusTopic(tenant, device)
	will, _ := json.Marshal(wire.Status{Schema: wire.StatusSchema, Device: device, State: wire.StateOffline, Session: 1})
	online, _ := json.Marshal(wire.Status{Schema: wire.StatusSchema, Device: device, State: wire.StateOnline, Session: 1, TS: time.Now().UTC()})
	if _, err := c.Write(connectPacket(device, topic, will, keepAlive)); err != nil {
		return fail(fmt.Errorf("write CONNECT: %w", err))
	}
	var ack [4]byte
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return fail(fmt.Errorf("read CONNACK: %w", err))
	}
	if ack[0] != 0x20 || ack[1] != 0x02 || ack[3] != 0 {
		return fail(fmt.Errorf("CONNACK % x: refused", ack))
	}
	tConnack := time.Since(start)
	if _, err := c.Write(publishPacket(topic, online, 1)); err != nil {
		return fail(fmt.Errorf("write PUBLISH: %w", err))
	}
	if _, err := io.ReadFull(c, ack[:]); err != nil {
		return fail(fmt.Errorf("read PUBACK: %w", err))
	}
	if ack[0] != 0x40 || ack[1] != 0x02 || binary.BigEndian.Uint16(ack[2:]) != 1 {
		return fail(fmt.Errorf("PUBACK % x: unexpected", ack))
	}
	tPuback := time.Since(start)
	_ = raw.SetDeadline(time.Time{})
	return c, tConnack, tPuback, nil
}

// connectPacket is an MQTT 3.1.1 CONNECT: clean session, a QoS 1 retained
// Will, no username (the identity is the certificate).
func connectPacket(clientID, willTopic string, will []byte, keepAlive time.Duration) []byte {
	var v []byte
	v = appendString(v, "MQTT")
	v = append(v, 4, 0x02|0x04|0x08|0x20) // level 4; clean session, will, will QoS 1, will retain
	v = binary.BigEndian.AppendUint16(v, uint16(keepAlive/time.Second))
	v = appendString(v, clientID)
	v = appendString(v, willTopic)
	v = appendBytes(v, will)
	return appendFixedHeader(0x10, v)
}

// publishPacket is a retained QoS 1 PUBLISH.
func publishPacket(topic string, payload []byte, id uint16) []byte {
	var v []byte
	v = appendString(v, topic)
	v = binary.BigEndian.AppendUint16(v, id)
	v = append(v, payload...)
	return appendFixedHeader(0x30|0x02|0x01, v)
}

func appendString(b []byte, s string) []byte { return appendBytes(b, []byte(s)) }

func appendBytes(b, s []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// appendFixedHeader prefixes body with the packet type and its remaining
// length (variable-length encoding).
func appendFixedHeader(typ byte, body []byte) []byte {
	out := []byte{typ}
	n := len(body)
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		out = append(out, d)
		if n == 0 {
			break
		}
	}
	return append(out, body...)
}

// pct is the p-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p/100+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// errLoad reports a load generator that ended without its result.
var errLoad = errors.New("load generator ended without a result")
