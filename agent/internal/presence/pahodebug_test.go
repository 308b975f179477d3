package presence_test

import (
	"log"
	"os"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// PAHO_DEBUG=1 go test -run X ./agent/internal/presence/ shows paho's own
// trace, the quickest way to see why a connection did or did not drop.
func init() {
	if os.Getenv("PAHO_DEBUG") != "" {
		paho.DEBUG = log.New(os.Stderr, "PAHO ", log.Lmicroseconds)
		paho.ERROR = log.New(os.Stderr, "PAHOERR ", log.Lmicroseconds)
	}
}
