package tgctl

import (
	"fmt"
	"strconv"
	"strings"
	"time"
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

// parseDuration reads a Go duration or a whole number of days ("7d").
func parseDuration(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.ParseUint(n, 10, 16)
		if err != nil {
			return 0, fmt.Errorf("%q: want a duration such as 24h or whole days such as 7d", s)
		}
		return time.Duration(days) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q: want a duration such as 24h or whole days such as 7d", s)
	}
	return d, nil
}

// formatDuration writes d without zero units: "24h", "1h30m".
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
