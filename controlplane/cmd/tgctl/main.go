// Command tgctl operates a TensorGuardFlow control plane; see
// controlplane/internal/tgctl.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/tgctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := (&tgctl.App{}).Main(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}
