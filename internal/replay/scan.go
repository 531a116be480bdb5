package replay

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// member is one "key": value pair of a flat JSON object; value is the raw
// token (a string with its quotes, a number, true, false or null).
type member struct {
	key   []byte
	value []byte
}

// scanObject splits one JSON object whose values are all scalars into its
// members, in order, validating the JSON grammar on the way. It replaces a
// generic decode into a map, which cost a map, a string per key and a
// reflective decode per field for every line of a recording. Keys with
// escapes are decoded with encoding/json (rare); a nested object or array is
// an error naming its field, as no field of the format takes one.
func scanObject(data []byte, buf []member) ([]member, error) {
	s := scanner{data: data}
	s.space()
	if !s.take('{') {
		return nil, s.fail("not a JSON object")
	}
	out := buf[:0]
	s.space()
	if s.take('}') {
		return out, s.end()
	}
	for {
		s.space()
		keyTok, err := s.str()
		if err != nil {
			return nil, err
		}
		key, err := unquote(keyTok)
		if err != nil {
			return nil, s.fail("bad object key")
		}
		s.space()
		if !s.take(':') {
			return nil, s.fail("missing ':' after a key")
		}
		s.space()
		val, err := s.value()
		if err != nil {
			var nested nestedError
			if errors.As(err, &nested) {
				return nil, &Error{Field: string(key), Err: errors.New("want a scalar, got a nested object or array")}
			}
			return nil, err
		}
		out = append(out, member{key: key, value: val})
		s.space()
		if s.take(',') {
			continue
		}
		if s.take('}') {
			return out, s.end()
		}
		return nil, s.fail("missing ',' or '}'")
	}
}

type nestedError struct{}

func (nestedError) Error() string { return "nested value" }

type scanner struct {
	data []byte
	pos  int
}

func (s *scanner) fail(what string) error {
	return &Error{Err: fmt.Errorf("not a JSON object: %s at offset %d", what, s.pos)}
}

func (s *scanner) space() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\r', '\n':
			s.pos++
		default:
			return
		}
	}
}

func (s *scanner) take(c byte) bool {
	if s.pos < len(s.data) && s.data[s.pos] == c {
		s.pos++
		return true
	}
	return false
}

func (s *scanner) end() error {
	s.space()
	if s.pos != len(s.data) {
		return s.fail("data after the object")
	}
	return nil
}

// str returns a string token with its quotes.
func (s *scanner) str() ([]byte, error) {
	start := s.pos
	if !s.take('"') {
		return nil, s.fail("want a string")
	}
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		switch {
		case c == '"':
			s.pos++
			return s.data[start:s.pos], nil
		case c == '\\':
			if s.pos+1 >= len(s.data) {
				return nil, s.fail("unterminated string")
			}
			switch s.data[s.pos+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.pos += 2
			case 'u':
				if s.pos+6 > len(s.data) || !isHex4(s.data[s.pos+2:s.pos+6]) {
					return nil, s.fail("bad \\u escape")
				}
				s.pos += 6
			default:
				return nil, s.fail("bad escape")
			}
		case c < 0x20:
			return nil, s.fail("control character in a string")
		default:
			s.pos++
		}
	}
	return nil, s.fail("unterminated string")
}

func isHex4(b []byte) bool {
	for _, c := range b {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func (s *scanner) value() ([]byte, error) {
	if s.pos >= len(s.data) {
		return nil, s.fail("missing value")
	}
	start := s.pos
	switch c := s.data[s.pos]; {
	case c == '"':
		return s.str()
	case c == '{' || c == '[':
		return nil, nestedError{}
	case c == '-' || '0' <= c && c <= '9':
		if !s.number() {
			return nil, s.fail("bad number")
		}
		return s.data[start:s.pos], nil
	default:
		for _, lit := range [...]string{"true", "false", "null"} {
			if len(s.data)-s.pos >= len(lit) && string(s.data[s.pos:s.pos+len(lit)]) == lit {
				s.pos += len(lit)
				return s.data[start:s.pos], nil
			}
		}
		return nil, s.fail("invalid value")
	}
}

// number consumes a JSON number: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() bool {
	s.take('-')
	digits := func() int {
		n := 0
		for s.pos < len(s.data) && '0' <= s.data[s.pos] && s.data[s.pos] <= '9' {
			s.pos++
			n++
		}
		return n
	}
	if s.take('0') {
		// no leading zeros
	} else if digits() == 0 {
		return false
	}
	if s.take('.') && digits() == 0 {
		return false
	}
	if s.take('e') || s.take('E') {
		if !s.take('+') {
			s.take('-')
		}
		if digits() == 0 {
			return false
		}
	}
	return true
}

// unquote decodes a string token. Without escapes the bytes are the string
// (checked to be UTF-8, as encoding/json would otherwise substitute U+FFFD);
// with escapes encoding/json decodes it.
func unquote(tok []byte) ([]byte, error) {
	body := tok[1 : len(tok)-1]
	plain := utf8.Valid(body)
	for _, c := range body {
		if c == '\\' {
			plain = false
			break
		}
	}
	if plain {
		return body, nil
	}
	var str string
	if err := jsonUnmarshalString(tok, &str); err != nil {
		return nil, err
	}
	return []byte(str), nil
}
