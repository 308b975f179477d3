package inferapi

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"unsafe"
)

// The tensor data decoders read a JSON array of numbers, flat or nested
// (the nesting is not checked against the shape, only the element count),
// without building an intermediate value per element.

func decodeFloat32(raw []byte, n int64) ([]float32, error) {
	out := make([]float32, 0, n)
	err := scanNumbers(raw, n, func(tok []byte) error {
		v, err := strconv.ParseFloat(view(tok), 32)
		if err != nil || math.IsInf(v, 0) {
			return fmt.Errorf("%q is not an FP32 value", tok)
		}
		out = append(out, float32(v))
		return nil
	})
	return out, err
}

func decodeInt64(raw []byte, n int64) ([]int64, error) {
	out := make([]int64, 0, n)
	err := scanNumbers(raw, n, func(tok []byte) error {
		v, err := strconv.ParseInt(view(tok), 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not an INT64 value", tok)
		}
		out = append(out, v)
		return nil
	})
	return out, err
}

// view is tok as a string without a copy: the body it points into is never
// modified, and outlives every error that quotes it.
func view(tok []byte) string { return unsafe.String(unsafe.SliceData(tok), len(tok)) }

// scanNumbers calls fn for each number token of the array in raw, and
// checks the brackets balance and the count is n.
func scanNumbers(raw []byte, n int64, fn func(tok []byte) error) error {
	if len(raw) == 0 {
		return errors.New("data is required")
	}
	depth, count := 0, int64(0)
	// Where we are: a value may follow '[' or ','; ']' may not follow ','.
	afterOpen, afterComma := false, false
	i := 0
	skip := func() {
		for i < len(raw) && (raw[i] == ' ' || raw[i] == '\n' || raw[i] == '\t' || raw[i] == '\r') {
			i++
		}
	}
	skip()
	if i >= len(raw) || raw[i] != '[' {
		return errors.New("data must be a JSON array of numbers")
	}
	for i < len(raw) {
		skip()
		if i >= len(raw) {
			break
		}
		switch c := raw[i]; {
		case c == '[':
			if depth > 0 && !afterOpen && !afterComma {
				return errors.New("data: missing comma")
			}
			depth++
			afterOpen, afterComma = true, false
			i++
		case c == ']':
			if depth == 0 {
				return errors.New("data: unbalanced ]")
			}
			if afterComma {
				return errors.New("data: trailing comma")
			}
			depth--
			afterOpen, afterComma = false, false
			i++
			if depth == 0 {
				skip()
				if i != len(raw) {
					return errors.New("data: trailing content after the array")
				}
			}
		case c == ',':
			if afterOpen || afterComma || depth == 0 {
				return errors.New("data: misplaced comma")
			}
			afterComma = true
			i++
		case c == '-' || (c >= '0' && c <= '9'):
			if !afterOpen && !afterComma {
				return errors.New("data: missing comma")
			}
			j := i
			for j < len(raw) && (raw[j] == '-' || raw[j] == '+' || raw[j] == '.' || raw[j] == 'e' || raw[j] == 'E' || (raw[j] >= '0' && raw[j] <= '9')) {
				j++
			}
			if count == n {
				return fmt.Errorf("data has more than the %d values the shape holds", n)
			}
			if err := fn(raw[i:j]); err != nil {
				return err
			}
			count++
			afterOpen, afterComma = false, false
			i = j
		default:
			return fmt.Errorf("data: unexpected %q (only numbers and arrays)", c)
		}
	}
	if depth != 0 {
		return errors.New("data: unterminated array")
	}
	if count != n {
		return fmt.Errorf("data has %d values; the shape holds %d", count, n)
	}
	return nil
}
