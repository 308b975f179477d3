package mqttacl

import (
	"strings"
	"unicode/utf8"
)

// maxTopicLen is the MQTT limit on a UTF-8 encoded string.
const maxTopicLen = 65535

// ValidTopic reports whether t is a valid MQTT topic name to publish on:
// non-empty, at most 65535 bytes of UTF-8, no NUL and no wildcard.
func ValidTopic(t string) bool {
	return validString(t) && !strings.ContainsAny(t, "+#")
}

// ValidFilter reports whether f is a valid MQTT topic filter: like a topic,
// but '+' may stand alone in any level and '#' alone in the last.
func ValidFilter(f string) bool {
	if !validString(f) {
		return false
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#":
			if i != len(levels)-1 {
				return false
			}
		case l == "+":
		case strings.ContainsAny(l, "+#"):
			return false
		}
	}
	return true
}

func validString(s string) bool {
	return s != "" && len(s) <= maxTopicLen && utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// Match reports whether filter matches topic under the MQTT rules, including
// that a filter starting with a wildcard does not match a topic starting
// with '$'. It returns false if either argument is invalid.
func Match(filter, topic string) bool {
	if !ValidFilter(filter) || !ValidTopic(topic) {
		return false
	}
	f := strings.Split(filter, "/")
	t := strings.Split(topic, "/")
	if strings.HasPrefix(topic, "$") && (f[0] == "+" || f[0] == "#") {
		return false
	}
	for i, fl := range f {
		if fl == "#" {
			return true // also matches the parent level: "a/#" matches "a"
		}
		if i >= len(t) {
			return false
		}
		if fl != "+" && fl != t[i] {
			return false
		}
	}
	return len(f) == len(t)
}

// Within reports whether every topic that filter can match is also matched
// by grant (set inclusion), for valid filters. It is what makes a subscribe
// ACL sound for wildcards: "tg/v1/+/devices/d/cmd/#" is not within
// "tg/v1/acme/devices/d/cmd/#", because '+' also matches other tenants.
func Within(filter, grant string) bool {
	if !ValidFilter(filter) || !ValidFilter(grant) {
		return false
	}
	f := strings.Split(filter, "/")
	g := strings.Split(grant, "/")
	// Topics starting with '$' are not matched by a leading wildcard, so a
	// filter that can match them is not within such a grant.
	if strings.HasPrefix(f[0], "$") && (g[0] == "+" || g[0] == "#") {
		return false
	}
	for i, gl := range g {
		if gl == "#" {
			return true
		}
		if i >= len(f) {
			return false // filter matches a topic shorter than any grant topic
		}
		switch fl := f[i]; {
		case fl == "#":
			return false // matches topics of every depth from here
		case gl == "+":
			// any single level of the filter, wildcard or literal, fits
		case fl == "+" || fl != gl:
			return false
		}
	}
	// The grant is exhausted: the filter must be too, unless its tail is
	// "#" which would also match deeper topics.
	return len(f) == len(g)
}

// sharePrefix is the MQTT 5 shared-subscription prefix.
const sharePrefix = "$share/"

// splitShared returns the filter inside a "$share/<group>/<filter>"
// subscription. ok is false for a malformed shared subscription.
func splitShared(f string) (filter string, shared, ok bool) {
	if !strings.HasPrefix(f, sharePrefix) {
		return f, false, true
	}
	group, rest, found := strings.Cut(f[len(sharePrefix):], "/")
	if !found || group == "" || strings.ContainsAny(group, "+#") || rest == "" {
		return "", true, false
	}
	return rest, true, true
}
