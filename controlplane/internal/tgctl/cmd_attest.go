package tgctl

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/spf13/cobra"

	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
	"github.com/tensorguard/tensorguardflow/internal/wire"
)

func (a *App) attestCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "attest DEVICE",
		Short: "Challenge a device for a TPM quote now",
		Long: `attest asks the control plane to send DEVICE a fresh attestation challenge at once
(operator role). The verdict follows, retained, on the fleet's attestation topic:
watch it with 'tgctl fleet watch FLEET'.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			sent, err := c.AttestDevice(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return writeJSON(a.Stdout, sent)
			}
			fmt.Fprintf(a.Stdout, "Challenge %s sent to %s (PCRs %s, expires %s).\n", sent.ChallengeID, sent.Device,
				joinInts(sent.PCRs), ts(sent.ExpiresAt))
			return nil
		},
	}
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ",")
}

// watchQuiet is how long --once waits after the last retained verdict
// before it prints; watchOnceMax bounds the whole wait.
const (
	watchQuiet   = 750 * time.Millisecond
	watchOnceMax = 5 * time.Second
)

func (a *App) fleetWatchCmd() *cobra.Command {
	var once bool
	cmd := &cobra.Command{
		Use:   "watch FLEET [--once]",
		Short: "Watch the attestation verdicts of a fleet live over MQTT",
		Long: `watch gets a read-only MQTT credential for a key generated in memory (it is never
written anywhere), connects to the broker, subscribes to the fleet's retained
attestation verdicts (tg/v1/<tenant>/fleets/<fleet>/attestation/+) and redraws a
table of device, state, reasons, TPM kind and evidence age on every change until
Ctrl-C. With -o json it prints each verdict as one JSON line instead. With --once
it prints the current retained verdicts and exits.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return a.watchFleet(ctx, args[0], once)
		},
	}
	cmd.Flags().BoolVar(&once, "once", false, "print the current verdicts and exit")
	return cmd
}

func (a *App) watchFleet(ctx context.Context, fleet string, once bool) error {
	c, _, err := a.client()
	if err != nil {
		return err
	}
	f, err := c.GetFleet(ctx, fleet)
	if err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate key: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "tgctl fleet watch"},
	}, key)
	if err != nil {
		return fmt.Errorf("create CSR: %w", err)
	}
	cr, err := c.MQTTCredentials(ctx, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}))
	if err != nil {
		return err
	}
	if err := checkIssued(cr.CertificatePEM, key); err != nil {
		return err
	}
	cert := tls.Certificate{PrivateKey: key}
	for rest := []byte(cr.CertificatePEM); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		cert.Certificate = append(cert.Certificate, b.Bytes)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(cr.CAPEM)) {
		return errors.New("the server returned no CA certificate for the broker")
	}
	host, port := brokerHostPort(cr.BrokerURL, c.BaseURL())
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	msgs := make(chan paho.Message, 256)
	lost := make(chan error, 1)
	opts := paho.NewClientOptions().
		AddBroker("ssl://" + net.JoinHostPort(host, port)).
		SetClientID("tgctl-watch-" + hex.EncodeToString(suffix[:])).
		SetTLSConfig(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, ServerName: host, MinVersion: tls.VersionTLS12}).
		SetCleanSession(true).
		SetOrderMatters(true).
		SetAutoReconnect(!once).
		SetConnectTimeout(10 * time.Second).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case lost <- err:
			default:
			}
		})
	filter := mqttacl.FleetAttestationFilter(cr.Tenant, f.ID)
	handler := func(_ paho.Client, m paho.Message) {
		select {
		case msgs <- m:
		case <-ctx.Done():
		}
	}
	opts.SetOnConnectHandler(func(cl paho.Client) {
		// (Re)subscribe on every connection: the retained verdicts come again.
		cl.Subscribe(filter, 1, handler)
	})
	mc := paho.NewClient(opts)
	if t := mc.Connect(); !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		if t.Error() != nil {
			return fmt.Errorf("connect to the broker %s:%s: %w", host, port, t.Error())
		}
		return fmt.Errorf("connect to the broker %s:%s: timed out", host, port)
	}
	defer mc.Disconnect(100)

	verdicts := map[string]wire.Verdict{}
	apply := func(m paho.Message) (wire.Verdict, bool) {
		dev := m.Topic()[strings.LastIndex(m.Topic(), "/")+1:]
		if len(m.Payload()) == 0 {
			delete(verdicts, dev)
			return wire.Verdict{}, false
		}
		var v wire.Verdict
		if err := json.Unmarshal(m.Payload(), &v); err != nil || v.Schema != wire.VerdictSchema {
			fmt.Fprintf(a.Stderr, "tgctl: ignoring a malformed verdict on %s\n", m.Topic())
			return wire.Verdict{}, false
		}
		verdicts[dev] = v
		return v, true
	}

	if once {
		deadline := time.NewTimer(watchOnceMax)
		defer deadline.Stop()
		quiet := time.NewTimer(watchQuiet)
		defer quiet.Stop()
	collect:
		for {
			select {
			case m := <-msgs:
				apply(m)
				quiet.Reset(watchQuiet)
			case <-quiet.C:
				break collect
			case <-deadline.C:
				break collect
			case err := <-lost:
				return fmt.Errorf("lost the broker: %w", err)
			case <-ctx.Done():
				return nil
			}
		}
		if a.jsonOutput() {
			for _, d := range sortedKeys(verdicts) {
				if err := writeJSONLine(a, verdicts[d]); err != nil {
					return err
				}
			}
			return nil
		}
		return a.verdictTable(f.Name, verdicts, false)
	}

	if !a.jsonOutput() {
		if err := a.verdictTable(f.Name, verdicts, true); err != nil {
			return err
		}
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-msgs:
			v, ok := apply(m)
			if a.jsonOutput() {
				if ok {
					if err := writeJSONLine(a, v); err != nil {
						return err
					}
				}
				continue
			}
			if err := a.verdictTable(f.Name, verdicts, true); err != nil {
				return err
			}
		case <-tick.C:
			if !a.jsonOutput() {
				// Evidence ages move on.
				if err := a.verdictTable(f.Name, verdicts, true); err != nil {
					return err
				}
			}
		case err := <-lost:
			fmt.Fprintf(a.Stderr, "tgctl: lost the broker (%v); reconnecting\n", err)
		}
	}
}

func sortedKeys(m map[string]wire.Verdict) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func writeJSONLine(a *App, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode JSON output: %w", err)
	}
	_, err = a.Stdout.Write(append(b, '\n'))
	return err
}

// verdictTable prints the table of verdicts; redraw clears the terminal
// first.
func (a *App) verdictTable(fleet string, verdicts map[string]wire.Verdict, redraw bool) error {
	now := time.Now()
	if a.Now != nil {
		now = a.Now()
	}
	if redraw {
		fmt.Fprintf(a.Stdout, "\x1b[H\x1b[2JFleet %s — %s (Ctrl-C to quit)\n\n", fleet, now.UTC().Format(time.RFC3339))
	}
	t := newTable(a.Stdout)
	t.row("DEVICE", "STATE", "REASONS", "TPM", "EVIDENCE AGE")
	for _, d := range sortedKeys(verdicts) {
		v := verdicts[d]
		age := ""
		if !v.EvidenceAt.IsZero() {
			age = now.Sub(v.EvidenceAt).Round(time.Second).String()
		}
		t.row(d, v.State, orDash(verdictReasons(v)), orDash(v.TPMKind), orDash(age))
	}
	return t.flush()
}

func verdictReasons(v wire.Verdict) string {
	var out []string
	for _, r := range v.Reasons {
		s := r.Code
		if r.PCR != nil {
			s += fmt.Sprintf("(pcr%d)", *r.PCR)
		}
		out = append(out, s)
	}
	return strings.Join(out, ",")
}
