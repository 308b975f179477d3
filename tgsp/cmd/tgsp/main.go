// Command tgsp creates, inspects, verifies and unpacks TGSP packages: signed,
// encrypted model packages (see tgsp/SPEC.md).
package main

import (
	"os"

	"github.com/tensorguard/tensorguardflow/tgsp/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
