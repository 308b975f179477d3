package broker

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
)

// The identities of the conformance suite. Device and operator ids are
// globally unique (docs/identity.md), which mosquitto relies on.
var (
	devA = mqttacl.Device("acme", "dev-aaaa")
	devB = mqttacl.Device("acme", "dev-bbbb")
	devC = mqttacl.Device("globex", "dev-cccc")
	opA  = mqttacl.Operator("acme", "op-aaaa")
	opG  = mqttacl.Operator("globex", "op-gggg")
	cpID = mqttacl.ControlPlane("")
)

// harness is a running broker, embedded or mosquitto, under test.
type harness struct {
	addr string // host:port of the mTLS listener
	ca   *testCA
	// strict: the broker refuses a forbidden subscription in its SUBACK and
	// a forbidden Will in its CONNACK (the embedded broker). mosquitto's
	// acl_file grants every SUBSCRIBE and checks each delivered message,
	// and checks a Will only when it is published; either way nothing
	// forbidden is delivered, which every harness must show.
	strict bool

	mu    sync.Mutex
	certs map[mqttacl.Identity]tls.Certificate
}

func (h *harness) cert(t *testing.T, id mqttacl.Identity) tls.Certificate {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	if c, ok := h.certs[id]; ok {
		return c
	}
	c, _ := h.ca.issue(t, id, "")
	h.certs[id] = c
	return c
}

type clientOpts struct {
	will       string // will topic; "" for none
	willRetain bool
	conn       *net.Conn // receives the raw connection
	cert       *tls.Certificate
	clientID   string
	onLost     func(error)
}

// connect connects id over mTLS with MQTT 3.1.1 and returns the client.
func (h *harness) connect(t *testing.T, id mqttacl.Identity, o clientOpts) (paho.Client, error) {
	t.Helper()
	cert := h.cert(t, id)
	if o.cert != nil {
		cert = *o.cert
	}
	roots := x509.NewCertPool()
	roots.AddCert(h.ca.cert)
	tlsConf := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	cid := o.clientID
	if cid == "" {
		cid = fmt.Sprintf("%s-%d", MosquittoUsername(id), time.Now().UnixNano())
	}
	opts := paho.NewClientOptions().
		AddBroker("ssl://" + h.addr).
		SetClientID(cid).
		SetTLSConfig(tlsConf).
		SetProtocolVersion(4).
		SetCleanSession(true).
		SetOrderMatters(false).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second)
	if o.onLost != nil {
		opts.SetConnectionLostHandler(func(_ paho.Client, err error) { o.onLost(err) })
	}
	if o.will != "" {
		opts.SetBinaryWill(o.will, []byte("offline"), 1, o.willRetain)
	}
	if o.conn != nil {
		opts.SetCustomOpenConnectionFn(func(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", u.Host, tlsConf)
			if err != nil {
				return nil, err
			}
			*o.conn = c
			return c, nil
		})
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect %v: timeout", id)
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(0) })
	return c, nil
}

func (h *harness) mustConnect(t *testing.T, id mqttacl.Identity, o clientOpts) paho.Client {
	t.Helper()
	c, err := h.connect(t, id, o)
	if err != nil {
		t.Fatalf("connect %v: %v", id, err)
	}
	return c
}

// subscribeCode subscribes and returns the SUBACK return code.
func subscribeCode(t *testing.T, c paho.Client, filter string, cb paho.MessageHandler) byte {
	t.Helper()
	tok := c.Subscribe(filter, 1, cb)
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("subscribe %q: timeout", filter)
	}
	if err := tok.Error(); err != nil {
		// paho reports a refused filter as an error as well as in Result.
		t.Logf("subscribe %q: %v", filter, err)
	}
	return tok.(*paho.SubscribeToken).Result()[filter]
}

// recorder collects messages.
type recorder struct {
	mu   sync.Mutex
	msgs []recorded
	ch   chan recorded
}

type recorded struct {
	topic, payload string
	retained       bool
}

func newRecorder() *recorder { return &recorder{ch: make(chan recorded, 1024)} }

func (r *recorder) handle(_ paho.Client, m paho.Message) {
	rec := recorded{topic: m.Topic(), payload: string(m.Payload()), retained: m.Retained()}
	r.mu.Lock()
	r.msgs = append(r.msgs, rec)
	r.mu.Unlock()
	select {
	case r.ch <- rec:
	default:
	}
}

// waitFor waits for a message with this payload.
func (r *recorder) waitFor(t *testing.T, payload string) recorded {
	t.Helper()
	deadline := time.After(10 * time.Second)
	r.mu.Lock()
	for _, m := range r.msgs {
		if m.payload == payload {
			r.mu.Unlock()
			return m
		}
	}
	r.mu.Unlock()
	for {
		select {
		case m := <-r.ch:
			if m.payload == payload {
				return m
			}
		case <-deadline:
			t.Fatalf("no message %q arrived", payload)
		}
	}
}

func (r *recorder) has(payload string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.msgs {
		if m.payload == payload {
			return true
		}
	}
	return false
}

func publish(t *testing.T, c paho.Client, topic, payload string, retain bool) {
	t.Helper()
	tok := c.Publish(topic, 1, retain, payload)
	if !tok.WaitTimeout(10 * time.Second) {
		t.Fatalf("publish %q: timeout", topic)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("publish %q: %v", topic, err)
	}
}

// runConformance runs the ACL conformance table of DESIGN.md §5 against a
// running broker. Both brokers must give the same answers.
func runConformance(t *testing.T, h *harness) {
	t.Run("subscribe", func(t *testing.T) {
		tests := []struct {
			id     mqttacl.Identity
			filter string
			ok     bool
			probe  string // a topic the filter matches: delivered iff ok
		}{
			{devA, mqttacl.CmdFilter("acme", "dev-aaaa"), true, mqttacl.CmdTopic("acme", "dev-aaaa", "p1")},
			{devA, mqttacl.CmdTopic("acme", "dev-aaaa", "attest"), true, mqttacl.CmdTopic("acme", "dev-aaaa", "attest")},
			{devA, mqttacl.CmdFilter("acme", "dev-bbbb"), false, mqttacl.CmdTopic("acme", "dev-bbbb", "p2")},
			{devA, "tg/v1/+/devices/dev-aaaa/cmd/#", false, mqttacl.CmdTopic("globex", "dev-aaaa", "p3")},
			{devA, "tg/v1/acme/devices/+/cmd/#", false, mqttacl.CmdTopic("acme", "dev-bbbb", "p4")},
			{devA, mqttacl.StatusTopic("acme", "dev-aaaa"), false, mqttacl.StatusTopic("acme", "dev-aaaa")},
			{devA, mqttacl.CmdFilter("globex", "dev-cccc"), false, mqttacl.CmdTopic("globex", "dev-cccc", "p5")},
			{devA, "#", false, mqttacl.RolloutEventsTopic("acme", "rol-1")},
			{devA, "$SYS/#", false, ""},
			{opA, "tg/v1/acme/#", true, mqttacl.RolloutEventsTopic("acme", "rol-2")},
			{opA, "tg/v1/acme/devices/+/status", true, mqttacl.StatusTopic("acme", "dev-bbbb")},
			{opA, "tg/v1/globex/#", false, mqttacl.RolloutEventsTopic("globex", "rol-3")},
			{opA, "tg/v1/+/#", false, mqttacl.RolloutEventsTopic("globex", "rol-4")},
			{opA, "#", false, mqttacl.TelemetryTopic("globex", "dev-cccc")},
			{opG, "tg/v1/globex/#", true, mqttacl.RolloutEventsTopic("globex", "rol-5")},
			{opG, "tg/v1/acme/devices/dev-aaaa/status", false, mqttacl.StatusTopic("acme", "dev-aaaa")},
			{cpID, "tg/v1/#", true, ""},
		}
		cp := h.mustConnect(t, cpID, clientOpts{})
		for i, tc := range tests {
			// One client per row, so a probe reaching it is unambiguous.
			c := h.mustConnect(t, tc.id, clientOpts{})
			rec := newRecorder()
			code := subscribeCode(t, c, tc.filter, rec.handle)
			if got := code != 0x80; (h.strict && got != tc.ok) || (!got && tc.ok) {
				t.Errorf("%v subscribe %q: SUBACK 0x%02x, want allowed=%v", tc.id, tc.filter, code, tc.ok)
			}
			if tc.probe == "" {
				continue
			}
			payload := fmt.Sprintf("probe-%d", i)
			publish(t, cp, tc.probe, payload, false)
			if tc.ok {
				rec.waitFor(t, payload)
				continue
			}
			time.Sleep(100 * time.Millisecond)
			if rec.has(payload) {
				t.Errorf("%v subscribed %q and received %q", tc.id, tc.filter, tc.probe)
			}
		}
	})

	t.Run("publish", func(t *testing.T) {
		cpRec, opRec, devRec := newRecorder(), newRecorder(), newRecorder()
		cpc := h.mustConnect(t, cpID, clientOpts{})
		if code := subscribeCode(t, cpc, "tg/v1/#", cpRec.handle); code == 0x80 {
			t.Fatal("control plane may not subscribe tg/v1/#")
		}
		opc := h.mustConnect(t, opA, clientOpts{})
		if code := subscribeCode(t, opc, "tg/v1/acme/#", opRec.handle); code == 0x80 {
			t.Fatal("operator may not subscribe its tenant")
		}
		dc := h.mustConnect(t, devA, clientOpts{})
		if code := subscribeCode(t, dc, mqttacl.CmdFilter("acme", "dev-aaaa"), devRec.handle); code == 0x80 {
			t.Fatal("device may not subscribe its cmd/")
		}
		allowed := map[string]string{
			"own-status":    mqttacl.StatusTopic("acme", "dev-aaaa"),
			"own-telemetry": mqttacl.TelemetryTopic("acme", "dev-aaaa"),
			"own-attest":    mqttacl.AttestationTopic("acme", "dev-aaaa"),
			"own-job":       mqttacl.JobTopic("acme", "dev-aaaa", "job-1"),
		}
		refused := map[string]string{
			"other-status":        mqttacl.StatusTopic("acme", "dev-bbbb"),
			"own-cmd":             mqttacl.CmdTopic("acme", "dev-aaaa", "attest"),
			"other-cmd":           mqttacl.CmdTopic("acme", "dev-bbbb", "attest"),
			"other-tenant-status": mqttacl.StatusTopic("globex", "dev-aaaa"),
			"verdict":             mqttacl.FleetAttestationTopic("acme", "flt-1", "dev-aaaa"),
			"below-job":           mqttacl.JobTopic("acme", "dev-aaaa", "job-1") + "/x",
		}
		for p, topic := range refused {
			publish(t, dc, topic, "dev:"+p, false)
		}
		// An operator is read-only.
		publish(t, opc, mqttacl.CmdTopic("acme", "dev-aaaa", "attest"), "op:cmd", false)
		publish(t, opc, mqttacl.StatusTopic("acme", "dev-aaaa"), "op:status", false)
		for p, topic := range allowed {
			publish(t, dc, topic, "dev:"+p, false)
		}
		// The control plane may command the device.
		publish(t, cpc, mqttacl.CmdTopic("acme", "dev-aaaa", "attest"), "cp:cmd", false)
		for p := range allowed {
			cpRec.waitFor(t, "dev:"+p)
			opRec.waitFor(t, "dev:"+p)
		}
		devRec.waitFor(t, "cp:cmd")
		time.Sleep(300 * time.Millisecond) // let any wrongly routed message arrive
		for p := range refused {
			if cpRec.has("dev:"+p) || opRec.has("dev:"+p) {
				t.Errorf("refused device publish %s was delivered", p)
			}
		}
		for _, p := range []string{"op:cmd", "op:status"} {
			if cpRec.has(p) || opRec.has(p) || devRec.has(p) {
				t.Errorf("operator publish %s was delivered", p)
			}
		}
	})

	t.Run("cross-tenant-operator", func(t *testing.T) {
		rec := newRecorder()
		og := h.mustConnect(t, opG, clientOpts{})
		if code := subscribeCode(t, og, "tg/v1/acme/#", rec.handle); h.strict && code != 0x80 {
			t.Errorf("globex operator subscribed to acme: SUBACK 0x%02x", code)
		}
		dc := h.mustConnect(t, devA, clientOpts{})
		publish(t, dc, mqttacl.TelemetryTopic("acme", "dev-aaaa"), "acme-secret", false)
		time.Sleep(300 * time.Millisecond)
		if rec.has("acme-secret") {
			t.Error("globex operator received an acme message")
		}
	})

	t.Run("retained", func(t *testing.T) {
		dc := h.mustConnect(t, devA, clientOpts{})
		publish(t, dc, mqttacl.StatusTopic("acme", "dev-aaaa"), "online-retained", true)
		dc.Disconnect(100)
		// The PUBACK can overtake the broker's storing of the retained
		// message; a subscriber that came in between gets it live (retain
		// flag clear). A later subscriber must get it from the store.
		for attempt := 1; ; attempt++ {
			rec := newRecorder()
			oc := h.mustConnect(t, opA, clientOpts{})
			subscribeCode(t, oc, "tg/v1/acme/devices/+/status", rec.handle)
			m := rec.waitFor(t, "online-retained")
			oc.Disconnect(100)
			if m.retained {
				break
			}
			if attempt == 3 {
				t.Fatal("retained status delivered without the retain flag to three new subscribers")
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("will", func(t *testing.T) {
		rec := newRecorder()
		oc := h.mustConnect(t, opA, clientOpts{})
		subscribeCode(t, oc, "tg/v1/acme/devices/+/status", rec.handle)
		// A Will on another device's status is refused at CONNECT (strict)
		// or never published.
		var forged net.Conn
		_, err := h.connect(t, devB, clientOpts{will: mqttacl.StatusTopic("acme", "dev-aaaa"), conn: &forged})
		if err == nil {
			if h.strict {
				t.Error("device connected with a Will on another device's status")
			}
			_ = forged.Close()
		}
		var raw net.Conn
		h.mustConnect(t, devB, clientOpts{will: mqttacl.StatusTopic("acme", "dev-bbbb"), conn: &raw})
		_ = raw.Close() // abrupt: no DISCONNECT
		if m := rec.waitFor(t, "offline"); m.topic != mqttacl.StatusTopic("acme", "dev-bbbb") {
			t.Errorf("will on %q", m.topic)
		}
		time.Sleep(200 * time.Millisecond)
		rec.mu.Lock()
		for _, m := range rec.msgs {
			if m.payload == "offline" && m.topic != mqttacl.StatusTopic("acme", "dev-bbbb") {
				t.Errorf("forged will published on %q", m.topic)
			}
		}
		rec.mu.Unlock()
	})

	t.Run("no-identity", func(t *testing.T) {
		// A certificate from the right CA without a SPIFFE ID gets nothing:
		// refused at TLS (embedded) or with no ACL entry (mosquitto).
		cert, _ := h.ca.issue(t, mqttacl.Device("acme", "dev-zzzz"), "-")
		c, err := h.connect(t, devA, clientOpts{cert: &cert})
		if err != nil {
			return
		}
		rec := newRecorder()
		if code := subscribeCode(t, c, "tg/v1/acme/devices/dev-zzzz/cmd/#", rec.handle); h.strict && code != 0x80 {
			t.Errorf("certificate without identity subscribed: 0x%02x", code)
		}
		cp := h.mustConnect(t, cpID, clientOpts{})
		publish(t, cp, mqttacl.CmdTopic("acme", "dev-zzzz", "x"), "to-nobody", false)
		time.Sleep(200 * time.Millisecond)
		if rec.has("to-nobody") {
			t.Error("certificate without identity received a message")
		}
	})
}
