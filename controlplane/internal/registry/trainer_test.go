package registry

import (
	"context"
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/tgsp"
)

// TestTrainerKeys: the trainer's signing key is made once per tenant,
// sealed, pinned as the publisher "tg-tinker" (again after an operator
// removed it), and a package it signs to the recipient key is accepted.
func TestTrainerKeys(t *testing.T) {
	t.Parallel()
	for _, b := range backends {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, b)
			ctx := context.Background()
			signer, recipient, err := e.reg.TrainerKeys(ctx, "acme")
			if err != nil {
				t.Fatal(err)
			}
			again, recipient2, err := e.reg.TrainerKeys(ctx, "acme")
			if err != nil || again.Public().KeyID() != signer.Public().KeyID() || recipient2.KeyID() != recipient.KeyID() {
				t.Fatalf("second call: %v", err)
			}
			if recipient.KeyID() != e.recipient("acme").KeyID() {
				t.Fatal("trainer packs to another key than the control plane's recipient key")
			}
			other, _, err := e.reg.TrainerKeys(ctx, "beta")
			if err != nil || other.Public().KeyID() == signer.Public().KeyID() {
				t.Fatalf("tenants share a trainer key: %v", err)
			}
			pub, err := e.st.GetPublisher(ctx, "acme", TrainerPublisher)
			if err != nil || pub.KeyID != signer.Public().KeyID() {
				t.Fatalf("publisher %+v, %v", pub, err)
			}
			row, err := e.st.GetTrainerSigningKey(ctx, "acme")
			if err != nil || row.KeyID != signer.Public().KeyID() {
				t.Fatalf("stored key %+v, %v", row, err)
			}
			if _, err := e.keys.Open(ctx, "beta", row.WrappedKey, e.reg.trainerKeys.aad("acme")); err == nil {
				t.Fatal("acme's sealed trainer key opens as beta's")
			}
			if err := e.st.DeletePublisher(ctx, "acme", TrainerPublisher); err != nil {
				t.Fatal(err)
			}
			if _, _, err := e.reg.TrainerKeys(ctx, "acme"); err != nil {
				t.Fatal(err)
			}
			if _, err := e.st.GetPublisher(ctx, "acme", TrainerPublisher); err != nil {
				t.Fatalf("not pinned again: %v", err)
			}
			raw := pack(t, modelDir(t, "lm"), tgsp.PackOptions{Name: "lm", Version: "1.0.0", Signer: signer,
				Recipients: []*tgsp.RecipientPublicKey{recipient}, CreatedAt: e.clk.Now(), ExpiresAt: e.clk.Now().Add(time.Hour)})
			if _, created, _, err := e.push("acme", raw); err != nil || !created {
				t.Fatalf("push of a trainer-signed package: %v", err)
			}
		})
	}
}
