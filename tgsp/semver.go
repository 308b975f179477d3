package tgsp

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a parsed Semantic Versioning 2.0.0 version. Agents compare
// installed and offered versions with Compare to refuse rollbacks.
type Version struct {
	Major, Minor, Patch uint64
	Pre                 []string // dot-separated pre-release identifiers
	Build               string   // ignored by Compare, as SemVer requires
}

// ParseVersion parses a SemVer 2.0.0 string without a leading "v".
func ParseVersion(s string) (Version, error) {
	var v Version
	if len(s) == 0 || len(s) > 128 {
		return v, fmt.Errorf("version %q must be 1..128 characters", s)
	}
	core := s
	if i := strings.IndexByte(core, '+'); i >= 0 {
		core, v.Build = core[:i], core[i+1:]
		if err := checkIdents(v.Build, false); err != nil {
			return v, fmt.Errorf("version %q: build metadata: %v", s, err)
		}
	}
	if i := strings.IndexByte(core, '-'); i >= 0 {
		var pre string
		core, pre = core[:i], core[i+1:]
		if err := checkIdents(pre, true); err != nil {
			return v, fmt.Errorf("version %q: pre-release: %v", s, err)
		}
		v.Pre = strings.Split(pre, ".")
	}
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return v, fmt.Errorf("version %q is not MAJOR.MINOR.PATCH", s)
	}
	nums := [3]*uint64{&v.Major, &v.Minor, &v.Patch}
	for i, p := range parts {
		if !isNumeric(p) || (len(p) > 1 && p[0] == '0') {
			return v, fmt.Errorf("version %q: %q is not a number without leading zeros", s, p)
		}
		n, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return v, fmt.Errorf("version %q: %v", s, err)
		}
		*nums[i] = n
	}
	return v, nil
}

func isNumeric(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func checkIdents(s string, pre bool) error {
	for _, id := range strings.Split(s, ".") {
		if id == "" {
			return fmt.Errorf("empty identifier")
		}
		for i := 0; i < len(id); i++ {
			c := id[i]
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
				return fmt.Errorf("identifier %q has a character outside [0-9A-Za-z-]", id)
			}
		}
		if pre && isNumeric(id) && len(id) > 1 && id[0] == '0' {
			return fmt.Errorf("numeric identifier %q has a leading zero", id)
		}
	}
	return nil
}

// Compare returns -1, 0 or +1 as a is lower than, equal to, or higher than b
// in SemVer precedence.
func (a Version) Compare(b Version) int {
	for _, d := range [3][2]uint64{{a.Major, b.Major}, {a.Minor, b.Minor}, {a.Patch, b.Patch}} {
		if d[0] != d[1] {
			if d[0] < d[1] {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(a.Pre) == 0 && len(b.Pre) == 0:
		return 0
	case len(a.Pre) == 0:
		return 1
	case len(b.Pre) == 0:
		return -1
	}
	for i := 0; i < len(a.Pre) && i < len(b.Pre); i++ {
		if c := compareIdent(a.Pre[i], b.Pre[i]); c != 0 {
			return c
		}
	}
	switch {
	case len(a.Pre) < len(b.Pre):
		return -1
	case len(a.Pre) > len(b.Pre):
		return 1
	}
	return 0
}

func compareIdent(a, b string) int {
	an, bn := isNumeric(a), isNumeric(b)
	switch {
	case an && bn:
		if len(a) != len(b) { // no leading zeros, so longer is larger
			if len(a) < len(b) {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	case an:
		return -1
	case bn:
		return 1
	}
	return strings.Compare(a, b)
}

func (v Version) String() string {
	s := fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch)
	if len(v.Pre) > 0 {
		s += "-" + strings.Join(v.Pre, ".")
	}
	if v.Build != "" {
		s += "+" + v.Build
	}
	return s
}
