package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/broker"
)

// runExternalPresence feeds the presence tracker from an external broker:
// it connects to mqtt.external_url as the control plane identity (a client
// certificate from the platform CA, issued in memory at start), trusts only
// the platform CA for the broker's server certificate (the one
// mosquitto-config writes), and subscribes to every status topic, again on
// each reconnect. paho runs with SetOrderMatters(false) (DESIGN.md §3) and
// the tracker's handler never blocks.
func (cp *ControlPlane) runExternalPresence(ctx context.Context) error {
	certPEM, keyPEM, err := cp.ca.IssueControlPlaneCert("")
	if err != nil {
		return err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	roots.AddCert(cp.ca.PlatformCA())
	var suffix [6]byte
	_, _ = rand.Read(suffix[:])
	log := cp.log.With("subsystem", "mqtt-external")
	handler := func(_ paho.Client, m paho.Message) {
		cp.presence.handle(broker.Message{Topic: m.Topic(), Payload: m.Payload(), Retained: m.Retained()})
	}
	opts := paho.NewClientOptions().
		AddBroker(cp.cfg.MQTT.ExternalURL).
		SetClientID("tg-controlplane-" + hex.EncodeToString(suffix[:])).
		SetTLSConfig(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}).
		SetCleanSession(true).
		SetOrderMatters(false).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(2 * time.Second).
		SetMaxReconnectInterval(30 * time.Second).
		SetOnConnectHandler(func(c paho.Client) {
			log.Info("connected to the external broker", "url", cp.cfg.MQTT.ExternalURL)
			if t := c.Subscribe(StatusFilter, 1, handler); t.WaitTimeout(10*time.Second) && t.Error() != nil {
				log.Warn("subscribe to device statuses", "error", t.Error())
			}
		}).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			log.Warn("lost the external broker; reconnecting", "error", err)
		})
	client := paho.NewClient(opts)
	client.Connect() // retried in the background until it succeeds
	for {
		select {
		case <-ctx.Done():
			client.Disconnect(250)
			return nil
		case <-cp.presence.wake:
			cp.presence.flush(ctx)
		}
	}
}
