package tgctl

import (
	"bytes"
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
	"strconv"
	"strings"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/spf13/cobra"

	"github.com/tensorguard/tensorguardflow/controlplane/client"
	"github.com/tensorguard/tensorguardflow/internal/mqttacl"
)

// Rollouts (docs/rollouts.md).

func (a *App) rolloutCmd() *cobra.Command {
	return group("rollout", "Roll packages out to fleets in waves",
		a.rolloutCreateCmd(), a.rolloutListCmd(), a.rolloutStatusCmd(),
		a.rolloutActionCmd("pause", "Pause a running rollout: no new device gets the job; devices at work go on", true,
			func(ctx context.Context, c *client.Client, id, reason string) (client.Rollout, error) {
				return c.PauseRollout(ctx, id, reason)
			}),
		a.rolloutActionCmd("resume", "Resume a paused rollout (the failures so far are acknowledged)", false,
			func(ctx context.Context, c *client.Client, id, _ string) (client.Rollout, error) {
				return c.ResumeRollout(ctx, id)
			}),
		a.rolloutActionCmd("abort", "Abort a rollout for good: jobs not started are cancelled", true,
			func(ctx context.Context, c *client.Client, id, reason string) (client.Rollout, error) {
				return c.AbortRollout(ctx, id, reason)
			}),
		a.rolloutActionCmd("rollback", "Roll the devices that installed the package back to the one they had before", true,
			func(ctx context.Context, c *client.Client, id, reason string) (client.Rollout, error) {
				return c.RollbackRollout(ctx, id, reason)
			}),
	)
}

func (a *App) rolloutCreateCmd() *cobra.Command {
	var (
		pkg, fleet               string
		selector                 map[string]string
		waves                    []int
		success, failure, concur int
		retries                  int
		timeout                  = newDurationFlag("")
	)
	cmd := &cobra.Command{
		Use:   "create --package NAME@VERSION --fleet F [--selector k=v,…] [--waves 5,25,100] [--success-threshold 95] [--failure-threshold 10] [--max-concurrent N] [--device-timeout D] [--retries R]",
		Short: "Roll a registry package out to a fleet in waves",
		Long: `create starts a rollout of a package of the registry (NAME@VERSION or its id) to the
enrolled devices of FLEET whose labels match --selector. Waves are cumulative
percentages of those devices: the next wave starts when --success-threshold per cent
of the current one succeeded; the rollout pauses when --failure-threshold per cent of
the devices released so far failed (0: at the first failure). At most --max-concurrent
devices work at once (0: no bound); a device silent for --device-timeout is notified
again --retries times, then counts as failed. Devices enrolling later join the last
wave; quarantined devices are skipped until they are trusted again.
Flags not given take the server's defaults: waves 100, success 100, failure 10,
no concurrency bound, device timeout 1h, no retries. Follow it with
'tgctl rollout status ID --watch'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pkg == "" || fleet == "" {
				return usagef("--package and --fleet are required")
			}
			in := client.RolloutCreate{Package: pkg, Fleet: fleet, Selector: selector, Waves: waves, DeviceTimeout: timeout.String()}
			f := cmd.Flags()
			for name, dst := range map[string]**int{"success-threshold": &in.SuccessThreshold, "failure-threshold": &in.FailureThreshold,
				"max-concurrent": &in.MaxConcurrent, "retries": &in.Retries} {
				if f.Changed(name) {
					v, _ := f.GetInt(name)
					*dst = &v
				}
			}
			c, _, err := a.client()
			if err != nil {
				return err
			}
			r, err := c.CreateRollout(cmd.Context(), in)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return writeJSON(a.Stdout, r)
			}
			if err := a.rolloutDetail(r); err != nil {
				return err
			}
			_, err = fmt.Fprintf(a.Stdout, "\nFollow it with: tgctl rollout status %s --watch\n", r.ID)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&pkg, "package", "", "NAME@VERSION or the id of a package in the registry")
	f.StringVar(&fleet, "fleet", "", "fleet id or name")
	f.StringToStringVar(&selector, "selector", nil, "labels the devices must all have, k=v,k2=v2 (default: every device of the fleet)")
	f.IntSliceVar(&waves, "waves", nil, "cumulative percentages of the devices, e.g. 5,25,100 (server default 100)")
	f.IntVar(&success, "success-threshold", 100, "per cent of a wave that must succeed before the next starts")
	f.IntVar(&failure, "failure-threshold", 10, "per cent of failed devices that pauses the rollout (0: the first failure)")
	f.IntVar(&concur, "max-concurrent", 0, "devices at work at once (0: no bound)")
	f.Var(timeout, "device-timeout", "how long a device has per attempt, e.g. 30m (server default 1h)")
	f.IntVar(&retries, "retries", 0, "notifications again after a device timed out")
	return cmd
}

func (a *App) rolloutListCmd() *cobra.Command {
	var fleet, state string
	cmd := &cobra.Command{
		Use:   "list [--fleet F] [--state S]",
		Short: "List rollouts, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			rs, err := c.ListRollouts(cmd.Context(), client.RolloutFilter{Fleet: fleet, State: state})
			if err != nil {
				return err
			}
			rs = nonNil(rs)
			return a.render(rs, func(t *tableWriter) {
				t.row("ID", "PACKAGE", "FLEET", "STATE", "WAVE", "SUCCEEDED", "FAILED", "IN FLIGHT", "DEVICES", "CREATED")
				for _, r := range rs {
					t.row(r.ID, r.Package.Name+"@"+r.Package.Version, r.FleetID, rolloutState(r), waveOf(r),
						strconv.Itoa(r.Counts.Succeeded), strconv.Itoa(r.Counts.Failed), strconv.Itoa(r.Counts.InFlight),
						strconv.Itoa(r.Counts.Total), ts(r.CreatedAt))
				}
			})
		},
	}
	cmd.Flags().StringVar(&fleet, "fleet", "", "only this fleet's (id or name)")
	cmd.Flags().StringVar(&state, "state", "", "only rollouts in this state: running, paused, completed, aborted, rolling_back, rolled_back")
	return cmd
}

func (a *App) rolloutActionCmd(name, short string, reason bool, call func(context.Context, *client.Client, string, string) (client.Rollout, error)) *cobra.Command {
	var why string
	use := name + " ID"
	if reason {
		use += " [--reason TEXT]"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			r, err := call(cmd.Context(), c, args[0], why)
			if err != nil {
				return err
			}
			if a.jsonOutput() {
				return writeJSON(a.Stdout, r)
			}
			return a.rolloutDetail(r)
		},
	}
	if reason {
		cmd.Flags().StringVar(&why, "reason", "", "why, for the record (at most 256 characters)")
	}
	return cmd
}

// Watching: redraw on the rollout's MQTT events, and every interval in any
// case (an event may be missed; with no broker reachable it is polling).
const defaultWatchInterval = 2 * time.Second

func (a *App) rolloutStatusCmd() *cobra.Command {
	var watch bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "status ID [--watch [--interval 2s]]",
		Short: "Show a rollout: its waves and every device's job",
		Long: `status shows a rollout: its state and why, its waves with the devices of each by
state, and every device's job (state, attempt, the device's last report, reason).
With --watch it redraws whenever the rollout's events arrive over MQTT (a read-only
credential for a key made in memory, as 'fleet watch' does) and every --interval,
until the rollout finishes (completed, aborted, rolled back) or Ctrl-C; with -o json
it prints the rollout as one JSON line each time it changes instead.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if !watch {
				r, err := c.GetRollout(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if a.jsonOutput() {
					return writeJSON(a.Stdout, r)
				}
				return a.rolloutDetail(r)
			}
			if interval <= 0 {
				return usagef("--interval must be positive")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return a.watchRollout(ctx, c, args[0], interval)
		},
	}
	cmd.Flags().BoolVar(&watch, "watch", false, "redraw on every change until the rollout finishes")
	cmd.Flags().DurationVar(&interval, "interval", defaultWatchInterval, "with --watch: poll at least this often")
	return cmd
}

func (a *App) watchRollout(ctx context.Context, c *client.Client, id string, interval time.Duration) error {
	r, err := c.GetRollout(ctx, id)
	if err != nil {
		return err
	}
	if client.RolloutFinished(r.State) {
		return a.drawRollout(r) // nothing will change: no broker needed
	}
	changed := make(chan struct{}, 1)
	mc, err := a.operatorMQTT(ctx, c, "tgctl-rollout-", func(cl paho.Client, tenant string) {
		cl.Subscribe(mqttacl.RolloutEventsTopic(tenant, r.ID), 1, func(paho.Client, paho.Message) {
			select {
			case changed <- struct{}{}:
			default:
			}
		})
	})
	if err != nil {
		fmt.Fprintf(a.Stderr, "tgctl: no live events (%v); polling every %s\n", oneLine(err.Error()), interval)
	} else {
		defer mc.Disconnect(100)
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var last []byte
	for {
		cur, _ := json.Marshal(r)
		if !bytes.Equal(cur, last) {
			last = cur
			if err := a.drawRollout(r); err != nil {
				return err
			}
		}
		if client.RolloutFinished(r.State) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-tick.C:
		}
		next, err := c.GetRollout(ctx, id)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			fmt.Fprintf(a.Stderr, "tgctl: %s\n", oneLine(FormatError(err)))
			continue
		}
		r = next
	}
}

// drawRollout prints r for --watch: a JSON line, or the table after
// clearing the terminal.
func (a *App) drawRollout(r client.Rollout) error {
	if a.jsonOutput() {
		return writeJSONLine(a, r)
	}
	now := a.Now().UTC().Format(time.RFC3339)
	fmt.Fprintf(a.Stdout, "\x1b[H\x1b[2JRollout %s — %s (Ctrl-C to quit)\n\n", r.ID, now)
	return a.rolloutDetail(r)
}

func rolloutState(r client.Rollout) string {
	if r.Reason != "" && r.Reason != "OPERATOR" {
		return r.State + " (" + r.Reason + ")"
	}
	return r.State
}

// waveOf is "2/3": the current wave of all, counted from 1.
func waveOf(r client.Rollout) string {
	return strconv.Itoa(r.CurrentWave+1) + "/" + strconv.Itoa(len(r.Waves))
}

func joinWaves(w []int) string {
	s := make([]string, len(w))
	for i, p := range w {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

// rolloutDetail prints a rollout: its settings and state, its waves, and
// its jobs when it has them.
func (a *App) rolloutDetail(r client.Rollout) error {
	t := newTable(a.Stdout)
	t.kv("ID", r.ID)
	t.kv("Package", r.Package.Name+"@"+r.Package.Version+" ("+shortDigest(r.Package.ID)+")")
	t.kv("Fleet", r.FleetID)
	t.kv("Selector", orDash(labels(r.Selector)))
	state := r.State
	if r.Reason != "" {
		state += " (" + r.Reason + ")"
	}
	t.kv("State", state)
	if r.Detail != "" {
		t.kv("Detail", r.Detail)
	}
	t.kv("Waves", fmt.Sprintf("%s%% — wave %s", joinWaves(r.Waves), waveOf(r)))
	thresholds := fmt.Sprintf("success %d%%, failure %d%%", r.SuccessThreshold, r.FailureThreshold)
	if r.AckedFailures > 0 {
		thresholds += fmt.Sprintf(" (%d failures acknowledged)", r.AckedFailures)
	}
	t.kv("Thresholds", thresholds)
	concurrency := "no bound"
	if r.MaxConcurrent > 0 {
		concurrency = strconv.Itoa(r.MaxConcurrent)
	}
	t.kv("Max concurrent", concurrency)
	t.kv("Device timeout", fmt.Sprintf("%s, %d retries", r.DeviceTimeout, r.Retries))
	t.kv("Devices", fmt.Sprintf("%d: %d succeeded, %d failed, %d in flight, %d pending, %d skipped, %d cancelled", r.Counts.Total,
		r.Counts.Succeeded, r.Counts.Failed, r.Counts.InFlight, r.Counts.Pending, r.Counts.Skipped, r.Counts.Cancelled))
	if rb := r.Rollback; rb != nil {
		t.kv("Rollback", fmt.Sprintf("%d: %d rolled back, %d failed, %d in flight, %d pending, %d skipped", rb.Total,
			rb.Succeeded, rb.Failed, rb.InFlight, rb.Pending, rb.Skipped))
	}
	t.kv("Created", ts(r.CreatedAt)+" by "+r.CreatedBy)
	if r.FinishedAt != nil {
		t.kv("Finished", tsp(r.FinishedAt))
	}
	if err := t.flush(); err != nil {
		return err
	}
	fmt.Fprintln(a.Stdout)
	t = newTable(a.Stdout)
	t.row("WAVE", "PERCENT", "STATE", "DEVICES", "SUCCEEDED", "FAILED", "IN FLIGHT", "PENDING", "SKIPPED", "CANCELLED")
	for _, w := range r.WaveStatus {
		t.row(strconv.Itoa(w.Index+1), strconv.Itoa(w.Percent)+"%", w.State, strconv.Itoa(w.Size), strconv.Itoa(w.Succeeded),
			strconv.Itoa(w.Failed), strconv.Itoa(w.InFlight), strconv.Itoa(w.Pending), strconv.Itoa(w.Skipped), strconv.Itoa(w.Cancelled))
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(r.Jobs) == 0 {
		return nil
	}
	fmt.Fprintln(a.Stdout)
	t = newTable(a.Stdout)
	t.row("DEVICE", "KIND", "WAVE", "STATE", "ATTEMPT", "REPORT", "REASON", "INSTALLED", "UPDATED")
	for _, j := range r.Jobs {
		installed := ""
		if j.InstalledName != "" {
			installed = j.InstalledName + "@" + j.InstalledVersion
		}
		t.row(j.DeviceID, j.Kind, strconv.Itoa(j.Wave+1), j.State, strconv.Itoa(j.Attempt), j.ReportState, j.Reason, installed, ts(j.UpdatedAt))
	}
	return t.flush()
}

// operatorMQTT connects to the broker with a read-only operator credential
// issued for a key made in memory (never written anywhere); onConnect
// (re)subscribes on every connection.
func (a *App) operatorMQTT(ctx context.Context, c *client.Client, idPrefix string, onConnect func(cl paho.Client, tenant string)) (paho.Client, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "tgctl watch"}}, key)
	if err != nil {
		return nil, fmt.Errorf("create CSR: %w", err)
	}
	cr, err := c.MQTTCredentials(ctx, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER}))
	if err != nil {
		return nil, err
	}
	if err := checkIssued(cr.CertificatePEM, key); err != nil {
		return nil, err
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
		return nil, errors.New("the server returned no CA certificate for the broker")
	}
	host, port := brokerHostPort(cr.BrokerURL, c.BaseURL())
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	opts := paho.NewClientOptions().
		AddBroker("ssl://" + net.JoinHostPort(host, port)).
		SetClientID(idPrefix + hex.EncodeToString(suffix[:])).
		SetTLSConfig(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, ServerName: host, MinVersion: tls.VersionTLS12}).
		SetCleanSession(true).
		SetOrderMatters(false).
		SetAutoReconnect(true).
		SetConnectTimeout(10 * time.Second).
		SetOnConnectHandler(func(cl paho.Client) { onConnect(cl, cr.Tenant) })
	mc := paho.NewClient(opts)
	if t := mc.Connect(); !t.WaitTimeout(15*time.Second) || t.Error() != nil {
		if t.Error() != nil {
			return nil, fmt.Errorf("connect to the broker %s:%s: %w", host, port, t.Error())
		}
		return nil, fmt.Errorf("connect to the broker %s:%s: timed out", host, port)
	}
	return mc, nil
}
