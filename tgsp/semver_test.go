package tgsp

import (
	"reflect"
	"strings"
	"testing"
)

// fzVersionValid are versions SemVer 2.0.0 allows (most from the list of
// valid strings published with the semver.org regular expression); they also
// seed FuzzParseVersion.
var fzVersionValid = []string{
	"0.0.0", "0.0.4", "1.2.3", "10.20.30", "1.1.2-prerelease+meta", "1.1.2+meta",
	"1.1.2+meta-valid", "1.0.0-alpha", "1.0.0-beta", "1.0.0-alpha.beta",
	"1.0.0-alpha.beta.1", "1.0.0-alpha.1", "1.0.0-alpha0.valid", "1.0.0-alpha.0valid",
	"1.0.0-alpha-a.b-c-somethinglong+build.1-aef.1-its-okay", "1.0.0-rc.1+build.1",
	"2.0.0-rc.1+build.123", "1.2.3-beta", "10.2.3-DEV-SNAPSHOT", "1.2.3-SNAPSHOT-123",
	"2.0.0+build.1848", "2.0.1-alpha.1227", "1.0.0-alpha+beta",
	"1.2.3----RC-SNAPSHOT.12.9.1--.12+788", "1.2.3----R-S.12.9.1--.12+meta",
	"1.2.3----RC-SNAPSHOT.12.9.1--.12", "1.0.0+0.build.1-rc.10000aaa-kk-0.1",
	"1.0.0-0A.is.legal", "1.0.0-0", "1.0.0-x.7.z.92", "1.0.0-x-y-z.--", "1.0.0--",
	"1.0.0-alpha+001", "1.0.0+20130313144700", "1.0.0-beta+exp.sha.5114f85",
	"1.0.0+21AF26D3----117B344092BD", "1.0.0+007", // leading zeros are fine in build metadata
	"1.0.0-99999999999999999999999999", // pre-release numbers have no size limit
	"18446744073709551615.18446744073709551615.18446744073709551615",
	"1.0.0-" + strings.Repeat("a", 122), // exactly 128 characters
}

// fzVersionInvalid are strings ParseVersion must refuse.
var fzVersionInvalid = []string{
	"", "1", "1.2", "1.2.3.4", "v1.2.3", "V1.2.3", " 1.2.3", "1.2.3 ", "1.2.3\n",
	"01.1.1", "1.01.1", "1.1.01", "00.0.0", "1.2.3-0123", "1.2.3-0123.0123", "1.2.3-alpha.01",
	"1.1.2+.123", "+invalid", "-invalid", "-invalid+invalid", "-invalid.01", "alpha",
	"alpha.beta", "alpha.beta.1", "alpha.1", "alpha+beta", "alpha_beta", "alpha.", "alpha..",
	"beta", "1.0.0-alpha_beta", "-alpha.", "1.0.0-alpha..", "1.0.0-alpha..1",
	"1.0.0-alpha...1", "1.2.3.DEV", "1.2-SNAPSHOT", "1.2.31.2.3----RC-SNAPSHOT.12.09.1--..12+788",
	"1.2-RC-SNAPSHOT", "-1.0.3-gamma+b7718", "+justmeta", "9.8.7+meta+meta",
	"9.8.7-whatever+meta+meta", "1.2.3-", "1.2.3+", "1.2.3-+", "1.2.3-a+", "1.2.3-.a",
	"1.2.3-a.", "1.2.3+a..b", "1.2.3-ä", "1.2.3+ä", "1.2.3-a b", "1..3", ".2.3", "1.2.",
	"-1.2.3", "1.-2.3", "+1.2.3", "1.+2.3", "1.2.+3", "0x1.2.3", "1.2.3_4", "１.2.3",
	"18446744073709551616.0.0", "0.18446744073709551616.0", "0.0.18446744073709551616",
	"99999999999999999999999.999999999999999999.99999999999999999",
	"1.0.0-" + strings.Repeat("a", 123), // 129 characters
}

func TestParseVersionValid(t *testing.T) {
	t.Parallel()
	for _, s := range fzVersionValid {
		v, err := ParseVersion(s)
		if err != nil {
			t.Errorf("ParseVersion(%q): %v", s, err)
			continue
		}
		if got := v.String(); got != s {
			t.Errorf("ParseVersion(%q).String() = %q", s, got)
		}
		if v.Compare(v) != 0 {
			t.Errorf("%q does not compare equal to itself", s)
		}
	}
}

func TestParseVersionFields(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want Version
	}{
		{"1.2.3", Version{Major: 1, Minor: 2, Patch: 3}},
		{"0.0.0", Version{}},
		{"1.0.0-alpha.1", Version{Major: 1, Pre: []string{"alpha", "1"}}},
		{"1.0.0-x-y.--+b.001-x", Version{Major: 1, Pre: []string{"x-y", "--"}, Build: "b.001-x"}},
		{"1.0.0+exp.sha.5114f85", Version{Major: 1, Build: "exp.sha.5114f85"}},
		{"18446744073709551615.2.3", Version{Major: 1<<64 - 1, Minor: 2, Patch: 3}},
	} {
		got, err := ParseVersion(tc.in)
		if err != nil {
			t.Errorf("ParseVersion(%q): %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseVersion(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestParseVersionInvalid(t *testing.T) {
	t.Parallel()
	for _, s := range fzVersionInvalid {
		if v, err := ParseVersion(s); err == nil {
			t.Errorf("ParseVersion(%q) = %+v, want an error", s, v)
		}
	}
}

// TestVersionCompare checks the precedence example of SemVer 2.0.0 §11 (and
// a few more), every pair in both directions.
func TestVersionCompare(t *testing.T) {
	t.Parallel()
	ordered := []string{
		"0.0.0", "0.0.1", "0.1.0", "0.9.9", "1.0.0-0", "1.0.0-1", "1.0.0-2", "1.0.0-10",
		"1.0.0-99999999999999999999", "1.0.0-A", "1.0.0-Z", // ASCII order: upper case first
		"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.2", "1.0.0-alpha.10", "1.0.0-alpha.beta",
		"1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0",
		"2.0.0", "2.1.0", "2.1.1", "10.0.0", "18446744073709551615.0.0",
	}
	vs := make([]Version, len(ordered))
	for i, s := range ordered {
		v, err := ParseVersion(s)
		if err != nil {
			t.Fatalf("ParseVersion(%q): %v", s, err)
		}
		vs[i] = v
	}
	for i := range vs {
		for j := range vs {
			want := 0
			switch {
			case i < j:
				want = -1
			case i > j:
				want = 1
			}
			if got := vs[i].Compare(vs[j]); got != want {
				t.Errorf("Compare(%s, %s) = %d, want %d", ordered[i], ordered[j], got, want)
			}
		}
	}
}

func TestVersionCompareIgnoresBuild(t *testing.T) {
	t.Parallel()
	for _, pair := range [][2]string{
		{"1.0.0+a", "1.0.0+b"},
		{"1.0.0", "1.0.0+build.5"},
		{"1.0.0-rc.1+x", "1.0.0-rc.1+y.z"},
		{"1.0.0-alpha+001", "1.0.0-alpha"},
	} {
		a, err := ParseVersion(pair[0])
		if err != nil {
			t.Fatal(err)
		}
		b, err := ParseVersion(pair[1])
		if err != nil {
			t.Fatal(err)
		}
		if a.Compare(b) != 0 || b.Compare(a) != 0 {
			t.Errorf("%s and %s differ only in build metadata but compare %d", pair[0], pair[1], a.Compare(b))
		}
	}
}
