package tgctl

import (
	"fmt"
	"strings"

	"github.com/tensorguard/tensorguardflow/internal/wire"
)

// durationFlag is a pflag.Value for durations as the API takes them: Go
// syntax ("1h30m") or whole days ("90d"). It keeps what the user wrote in
// canonical form, so the server sees "90d" or "24h".
type durationFlag struct{ s string }

func newDurationFlag(def string) *durationFlag {
	f := &durationFlag{}
	if def != "" {
		if err := f.Set(def); err != nil {
			panic(err)
		}
	}
	return f
}

func (f *durationFlag) String() string { return f.s }
func (f *durationFlag) Type() string   { return "duration" }

func (f *durationFlag) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	if d <= 0 {
		return fmt.Errorf("%q: must be positive", s)
	}
	f.s = formatDuration(d)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		f.s = days + "d"
	}
	return nil
}

var (
	parseDuration  = wire.ParseDuration
	formatDuration = wire.FormatDuration
)
