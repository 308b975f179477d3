package api_test

import (
	"testing"
	"time"

	"github.com/tensorguard/tensorguardflow/controlplane/internal/api"
)

var durationCases = []struct {
	in   string
	want time.Duration
	out  string
	ok   bool
}{
	{"24h", 24 * time.Hour, "24h", true},
	{"1h30m", 90 * time.Minute, "1h30m", true},
	{"90d", 90 * 24 * time.Hour, "2160h", true},
	{"7d", 7 * 24 * time.Hour, "168h", true},
	{"45s", 45 * time.Second, "45s", true},
	{"2h0m30s", 2*time.Hour + 30*time.Second, "2h0m30s", true},
	{"10m", 10 * time.Minute, "10m", true},
	{"", 0, "", false},
	{"d", 0, "", false},
	{"1.5d", 0, "", false},
	{"-1d", 0, "", false},
	{"99999d", 0, "", false},
	{"1y", 0, "", false},
	{"forever", 0, "", false},
}

func TestParseFormatDuration(t *testing.T) {
	t.Parallel()
	for _, tc := range durationCases {
		got, err := api.ParseDuration(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
			continue
		}
		if tc.ok {
			if s := api.FormatDuration(got); s != tc.out {
				t.Errorf("FormatDuration(%v) = %q, want %q", got, s, tc.out)
			}
		}
	}
}

// FuzzDurationRoundTrip: whatever ParseDuration accepts, FormatDuration
// writes back in a form that parses to the same duration.
func FuzzDurationRoundTrip(f *testing.F) {
	for _, tc := range durationCases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := api.ParseDuration(s)
		if err != nil {
			return
		}
		back, err := api.ParseDuration(api.FormatDuration(d))
		if err != nil || back != d {
			t.Fatalf("%q → %v → %q → %v, %v", s, d, api.FormatDuration(d), back, err)
		}
	})
}
