package attest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"strings"
	"testing"
)

// logBuilder writes crypto-agile logs with a chosen digest table.
type logBuilder struct {
	algs  [][2]uint16 // alg, size
	bytes []byte
}

func newLogBuilder(algs ...[2]uint16) *logBuilder {
	le := binary.LittleEndian
	var spec []byte
	spec = append(spec, specIDSignature...)
	spec = append(spec, 0, 0, 0, 0, 0, 2, 0, 2)
	spec = le.AppendUint32(spec, uint32(len(algs)))
	for _, a := range algs {
		spec = le.AppendUint16(spec, a[0])
		spec = le.AppendUint16(spec, a[1])
	}
	spec = append(spec, 3, 'v', 'n', 'd')
	var b []byte
	b = le.AppendUint32(b, 0)
	b = le.AppendUint32(b, evNoAction)
	b = append(b, make([]byte, sha1Size)...)
	b = le.AppendUint32(b, uint32(len(spec)))
	b = append(b, spec...)
	return &logBuilder{algs: algs, bytes: b}
}

// event appends a record with a digest per listed algorithm: SHA-256 of
// data for the SHA-256 bank, a constant for the others (never replayed).
func (l *logBuilder) event(pcr, typ uint32, data []byte) *logBuilder {
	le := binary.LittleEndian
	l.bytes = le.AppendUint32(l.bytes, pcr)
	l.bytes = le.AppendUint32(l.bytes, typ)
	l.bytes = le.AppendUint32(l.bytes, uint32(len(l.algs)))
	for _, a := range l.algs {
		l.bytes = le.AppendUint16(l.bytes, a[0])
		if a[0] == algSHA256 {
			d := sha256.Sum256(data)
			l.bytes = append(l.bytes, d[:]...)
		} else {
			l.bytes = append(l.bytes, bytes.Repeat([]byte{0xaa}, int(a[1]))...)
		}
	}
	l.bytes = le.AppendUint32(l.bytes, uint32(len(data)))
	l.bytes = append(l.bytes, data...)
	return l
}

var (
	bankSHA1   = [2]uint16{algSHA1, 20}
	bankSHA256 = [2]uint16{algSHA256, 32}
	bankSHA384 = [2]uint16{0x000c, 48}
)

func TestParseEventLog(t *testing.T) {
	t.Parallel()
	extend := func(pcr [32]byte, data ...string) [32]byte {
		for _, d := range data {
			m := sha256.Sum256([]byte(d))
			pcr = sha256.Sum256(append(pcr[:], m[:]...))
		}
		return pcr
	}
	var loc3 [32]byte
	loc3[31] = 3
	for _, c := range []struct {
		name    string
		log     []byte
		wantErr string
		want    map[int][32]byte
	}{
		{name: "header only", log: newLogBuilder(bankSHA256).bytes, want: map[int][32]byte{}},
		{name: "three banks", log: newLogBuilder(bankSHA1, bankSHA256, bankSHA384).event(4, 0x80000003, []byte("a")).event(4, 1, []byte("b")).bytes,
			want: map[int][32]byte{4: extend([32]byte{}, "a", "b")}},
		{name: "startup locality 3", log: newLogBuilder(bankSHA256).event(0, evNoAction, []byte("StartupLocality\x00\x03")).event(0, 1, []byte("crtm")).bytes,
			want: map[int][32]byte{0: extend(loc3, "crtm")}},
		{name: "no-action events are not extended", log: newLogBuilder(bankSHA256).event(5, evNoAction, []byte("x")).bytes, want: map[int][32]byte{}},
		{name: "SHA-1 only", log: newLogBuilder(bankSHA1).event(0, 1, []byte("a")).bytes, wantErr: "no SHA-256"},
		{name: "PCR 24", log: newLogBuilder(bankSHA256).event(24, 1, []byte("a")).bytes, wantErr: "extends PCR 24"},
		{name: "no header", log: newLogBuilder(bankSHA256).bytes[32:], wantErr: "truncated"},
		{name: "legacy SHA-1 log", log: bytes.Replace(newLogBuilder(bankSHA256).bytes, specIDSignature, []byte("Spec ID Event00\x00"), 1), wantErr: "crypto-agile"},
		{name: "zero algorithms", log: newLogBuilder().bytes, wantErr: "0 digest algorithms"},
		{name: "wrong SHA-256 size", log: newLogBuilder([2]uint16{algSHA256, 20}).bytes, wantErr: "SHA-256 digest size"},
		{name: "duplicate algorithm", log: newLogBuilder(bankSHA256, bankSHA256).bytes, wantErr: "twice"},
		{name: "algorithm not in header", log: append(newLogBuilder(bankSHA256).bytes,
			1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0x04, 0x00), wantErr: "does not list"},
		{name: "zero digests", log: append(newLogBuilder(bankSHA256).bytes, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0), wantErr: "0 digests"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			l, err := parseEventLog(c.log)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := l.replay()
			if len(got) != len(c.want) {
				t.Fatalf("replayed %x, want %x", got, c.want)
			}
			for i, v := range c.want {
				if got[i] != v {
					t.Errorf("PCR %d = %x, want %x", i, got[i], v)
				}
			}
		})
	}
}

// TestParseEventLogTruncated: every proper prefix of a log either parses
// (it ends on a record boundary) or fails; none panics.
func TestParseEventLogTruncated(t *testing.T) {
	t.Parallel()
	log := newLogBuilder(bankSHA1, bankSHA256).event(0, 1, []byte("a")).event(7, evEFIVariableDriverConfig, []byte("bcd")).bytes
	boundaries := 0
	for n := range len(log) {
		if _, err := parseEventLog(log[:n]); err == nil {
			boundaries++
		}
	}
	if boundaries != 2 { // after the header, after the first event
		t.Fatalf("%d prefixes parsed, want 2", boundaries)
	}
}
