package tpmdev_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/tensorguard/tensorguardflow/internal/tpmdev"
	"github.com/tensorguard/tensorguardflow/internal/tpmdev/tpmdevtest"
)

// TestFlushTransientsAfterCrash: a process that dies without flushing (an
// agent SIGKILLed with its AK and TLS key loaded) leaves its objects in an
// swtpm, which has no resource manager. Here the dead process had taken
// every object slot: its successor cannot unseal until FlushTransients,
// and then unseals and quotes without the TPM restarting.
func TestFlushTransientsAfterCrash(t *testing.T) {
	s := tpmdevtest.StartSWTPM(t)
	d := s.Open(t)
	secret := randomBytes(t, 32)
	blob, err := d.Seal(secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.AK(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.TLSKey(); err != nil {
		t.Fatal(err)
	}
	for n := 0; ; n++ {
		_, err := d.CreatePrimary(tpmdev.StorageKeyTemplate())
		var w tpm2.Warning
		if errors.As(err, &w) && w.Code == tpm2.RCObjectMemory {
			break
		}
		if err != nil || n > 64 {
			t.Fatalf("filling the TPM: %d keys, %v", n, err)
		}
	}
	_ = d.Close() // the transport only: nothing is flushed, as in a crash

	d = s.Open(t)
	defer d.Close()
	if _, err := d.Unseal(blob); err == nil {
		t.Fatal("unsealed with every slot taken by a dead process: the test filled nothing")
	}
	if err := d.FlushTransients(); err != nil {
		t.Fatal(err)
	}
	if got, err := d.Unseal(blob); err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("unseal after a crashed user: %x, %v", got, err)
	}
	ak, err := d.AK()
	if err != nil {
		t.Fatal(err)
	}
	defer ak.Close()
	if _, err := d.Quote(ak, tpm2.AlgSHA256, []int{0, 7}, randomBytes(t, 32)); err != nil {
		t.Fatalf("quote after a crashed user: %v", err)
	}
}
