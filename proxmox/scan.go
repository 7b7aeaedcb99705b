package proxmox

import (
	"bytes"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Walking JSON that is known to be valid. decodeData unmarshals the whole
// answer into its envelope first, which checks every byte of it against
// the JSON grammar; the data member it hands on is therefore valid JSON,
// and reading it again through encoding/json (into a map of raw messages,
// each one copied, then each value parsed once more) only repeats that
// work. The functions below find the members of such an object by their
// delimiters alone, without copying a value.
//
// They are exact only on valid JSON. On anything else they return an
// error or some split of the bytes, never panic; callers must hand them
// only what encoding/json has accepted.

// errNotValidJSON is what the walkers return for input that is not valid
// JSON, which a caller following the rule above never sees.
var errNotValidJSON = errors.New("malformed JSON")

// forEachMember calls fn with each member of the JSON object b, in order:
// the member name decoded as encoding/json decodes it (escapes resolved,
// invalid UTF-8 replaced by U+FFFD) and the value's bytes, a subslice of b.
// The name is a subslice of b too unless it had to be decoded; fn must
// not keep or modify either.
// Duplicate names are passed as often as they occur. b "null" is an object
// without members, as encoding/json unmarshals null into a map; any other
// non-object is an error naming what it is.
func forEachMember(b []byte, fn func(name, value []byte) error) error {
	i := skipSpace(b, 0)
	if i == len(b) {
		return errNotValidJSON
	}
	switch b[i] {
	case '{':
	case 'n':
		return nil // null: valid JSON starting with n is null
	default:
		return fmt.Errorf("expected an object, got %s", jsonKind(b[i]))
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return errNotValidJSON
		}
		end := stringEnd(b, i)
		if end < 0 {
			return errNotValidJSON
		}
		name, err := memberName(b[i:end])
		if err != nil {
			return errNotValidJSON
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return errNotValidJSON
		}
		i = skipSpace(b, i+1)
		vend := valueEnd(b, i)
		if vend < 0 || vend == i {
			return errNotValidJSON
		}
		if err := fn(name, b[i:vend]); err != nil {
			return err
		}
		i = skipSpace(b, vend)
		if i >= len(b) {
			return errNotValidJSON
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return nil
		default:
			return errNotValidJSON
		}
	}
}

// memberName decodes the string literal lit as jsonString does, returning
// its contents in place when they need no decoding: a name compared with
// constants then costs no allocation.
func memberName(lit []byte) ([]byte, error) {
	inner := lit[1 : len(lit)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) && !hasControl(inner) {
		return inner, nil
	}
	s, err := jsonString(lit)
	return []byte(s), err
}

// jsonKind names the JSON type a value starting with c has, for errors.
func jsonKind(c byte) string {
	switch c {
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	}
	return "a number"
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// stringEnd returns the index just past the string literal starting at
// b[i] (a '"'), or -1 if it does not end.
func stringEnd(b []byte, i int) int {
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++ // the escaped byte cannot end the string
		case '"':
			return j + 1
		}
	}
	return -1
}

// valueEnd returns the index just past the JSON value starting at b[i], or
// -1 if it does not end.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end := stringEnd(b, j)
				if end < 0 {
					return -1
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1
				}
			}
		}
		return -1
	}
	// A number, true, false or null: it ends where a delimiter begins.
	j := i
	for j < len(b) {
		switch b[j] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return j
		}
		j++
	}
	return j
}

// forEachElement calls fn with the index and bytes (a subslice of b) of
// each element of the JSON array b, in order. b "null" is an array without
// elements, as encoding/json unmarshals null into a slice; any other
// non-array is an error naming what it is.
func forEachElement(b []byte, fn func(i int, elem []byte) error) error {
	i := skipSpace(b, 0)
	if i == len(b) {
		return errNotValidJSON
	}
	switch b[i] {
	case '[':
	case 'n':
		return nil
	case '{':
		return errors.New("expected an array, got an object")
	default:
		return fmt.Errorf("expected an array, got %s", jsonKind(b[i]))
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return nil
	}
	for n := 0; ; n++ {
		end := valueEnd(b, i)
		if end < 0 || end == i {
			return errNotValidJSON
		}
		if err := fn(n, b[i:end]); err != nil {
			return err
		}
		i = skipSpace(b, end)
		if i >= len(b) {
			return errNotValidJSON
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case ']':
			return nil
		default:
			return errNotValidJSON
		}
	}
}
