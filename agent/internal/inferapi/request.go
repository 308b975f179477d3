package inferapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// parseRequest reads an inference request in one pass over the body. A
// request is mostly its tensors' data, and encoding/json would scan those
// bytes two or three times (validation, decoding, then RawMessage again)
// at a fraction of the speed of a loop over digits; this keeps the API's
// overhead small next to a sub-millisecond model. It is as strict as a
// json.Decoder with DisallowUnknownFields: unknown or repeated keys,
// trailing data and malformed JSON are errors. Tensor data is only
// delimited here (a valid JSON value); decodeFloat32 and decodeInt64 read
// it. FuzzParseRequest checks it against encoding/json.
func parseRequest(b []byte) (inferRequest, error) {
	p := &parser{b: b}
	var req inferRequest
	err := p.object(func(key string) error {
		switch key {
		case "id":
			return p.str(&req.ID)
		case "parameters":
			raw, err := p.value()
			req.Parameters = raw
			return err
		case "inputs":
			return p.array(func() error {
				var t inputTensor
				err := p.object(func(key string) error {
					switch key {
					case "name":
						return p.str(&t.Name)
					case "datatype":
						return p.str(&t.DataType)
					case "shape":
						return p.ints(&t.Shape)
					case "parameters":
						raw, err := p.value()
						t.Parameters = raw
						return err
					case "data":
						raw, err := p.value()
						t.Data = raw
						return err
					}
					return fmt.Errorf("unknown field %q in an input", key)
				})
				req.Inputs = append(req.Inputs, t)
				return err
			})
		case "outputs":
			return p.array(func() error {
				var o struct {
					Name       string          `json:"name"`
					Parameters json.RawMessage `json:"parameters,omitempty"`
				}
				err := p.object(func(key string) error {
					switch key {
					case "name":
						return p.str(&o.Name)
					case "parameters":
						raw, err := p.value()
						o.Parameters = raw
						return err
					}
					return fmt.Errorf("unknown field %q in an output", key)
				})
				req.Outputs = append(req.Outputs, o)
				return err
			})
		}
		return fmt.Errorf("unknown field %q", key)
	})
	if err != nil {
		return inferRequest{}, err
	}
	p.ws()
	if p.i != len(p.b) {
		return inferRequest{}, errors.New("data after the JSON object")
	}
	return req, nil
}

type parser struct {
	b []byte
	i int
}

func (p *parser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *parser) errf(format string, args ...any) error {
	return fmt.Errorf("at byte %d: %s", p.i, fmt.Sprintf(format, args...))
}

func (p *parser) expect(c byte) error {
	p.ws()
	if p.i >= len(p.b) {
		return p.errf("unexpected end, want %q", c)
	}
	if p.b[p.i] != c {
		return p.errf("want %q, found %q", c, p.b[p.i])
	}
	p.i++
	return nil
}

// object reads {"key": value, …}, calling field for each key with the
// parser before its value; a repeated key is an error.
func (p *parser) object(field func(key string) error) error {
	if err := p.expect('{'); err != nil {
		return err
	}
	seen := map[string]bool{}
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return nil
	}
	for {
		var key string
		if err := p.str(&key); err != nil {
			return err
		}
		if seen[key] {
			return fmt.Errorf("field %q given twice", key)
		}
		seen[key] = true
		if err := p.expect(':'); err != nil {
			return err
		}
		if err := field(key); err != nil {
			return err
		}
		p.ws()
		if p.i >= len(p.b) {
			return p.errf("unterminated object")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			return nil
		default:
			return p.errf("want ',' or '}', found %q", p.b[p.i])
		}
	}
}

// array reads [elem, …].
func (p *parser) array(elem func() error) error {
	if err := p.expect('['); err != nil {
		return err
	}
	p.ws()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return nil
	}
	for {
		if err := elem(); err != nil {
			return err
		}
		p.ws()
		if p.i >= len(p.b) {
			return p.errf("unterminated array")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			return nil
		default:
			return p.errf("want ',' or ']', found %q", p.b[p.i])
		}
	}
}

// str reads a JSON string into *s (escapes decoded by encoding/json, which
// only sees the string's bytes).
func (p *parser) str(s *string) error {
	p.ws()
	start := p.i
	if err := p.skipString(); err != nil {
		return err
	}
	raw := p.b[start:p.i]
	for _, c := range raw[1 : len(raw)-1] {
		if c == '\\' || c >= 0x80 {
			return json.Unmarshal(raw, s)
		}
	}
	*s = string(raw[1 : len(raw)-1])
	return nil
}

// ints reads an array of integers.
func (p *parser) ints(out *[]int64) error {
	*out = []int64{}
	return p.array(func() error {
		p.ws()
		start := p.i
		if err := p.skipNumber(); err != nil {
			return err
		}
		v, err := strconv.ParseInt(string(p.b[start:p.i]), 10, 64)
		if err != nil {
			return fmt.Errorf("shape: %s is not an integer", p.b[start:p.i])
		}
		*out = append(*out, v)
		return nil
	})
}

// value checks one JSON value and returns its bytes.
func (p *parser) value() ([]byte, error) {
	p.ws()
	start := p.i
	if err := p.skipValue(0); err != nil {
		return nil, err
	}
	return p.b[start:p.i], nil
}

// maxDepth bounds nesting, as encoding/json does.
const maxDepth = 10000

func (p *parser) skipValue(depth int) error {
	if depth > maxDepth {
		return p.errf("nested too deeply")
	}
	p.ws()
	if p.i >= len(p.b) {
		return p.errf("unexpected end, want a value")
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.object(func(string) error { return p.skipValue(depth + 1) })
	case c == '[':
		return p.array(func() error { return p.skipValue(depth + 1) })
	case c == '"':
		return p.skipString()
	case c == '-' || (c >= '0' && c <= '9'):
		return p.skipNumber()
	}
	for _, lit := range []string{"true", "false", "null"} {
		if len(p.b)-p.i >= len(lit) && string(p.b[p.i:p.i+len(lit)]) == lit {
			p.i += len(lit)
			return nil
		}
	}
	return p.errf("invalid character %q", p.b[p.i])
}

func (p *parser) skipString() error {
	if p.i >= len(p.b) || p.b[p.i] != '"' {
		return p.errf("want a string")
	}
	p.i++
	for p.i < len(p.b) {
		switch c := p.b[p.i]; {
		case c == '"':
			p.i++
			return nil
		case c == '\\':
			if p.i+1 >= len(p.b) {
				return p.errf("unterminated string")
			}
			switch p.b[p.i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				p.i += 2
			case 'u':
				if p.i+6 > len(p.b) {
					return p.errf("bad \\u escape")
				}
				for _, h := range p.b[p.i+2 : p.i+6] {
					if !isHex(h) {
						return p.errf("bad \\u escape")
					}
				}
				p.i += 6
			default:
				return p.errf("bad escape")
			}
		case c < 0x20:
			return p.errf("control character in a string")
		default:
			p.i++
		}
	}
	return p.errf("unterminated string")
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// skipNumber accepts exactly JSON's number grammar.
func (p *parser) skipNumber() error {
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.i < len(p.b) && p.b[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(p.b) && p.b[p.i] == '0':
		p.i++
	case digits() == 0:
		return p.errf("malformed number")
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return p.errf("malformed number")
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return p.errf("malformed number")
		}
	}
	return nil
}
