package wire

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Durations in API bodies (docs/api.md) are Go syntax ("1h30m") or a whole
// number of days ("90d"); the server writes them back in Go syntax without
// zero units ("24h", "1h30m").

// ParseDuration reads a Go duration or a whole number of days.
func ParseDuration(s string) (time.Duration, error) {
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

// FormatDuration writes d in Go syntax without zero units.
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
