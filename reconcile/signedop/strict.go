package signedop

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"github.com/guestward/guestward/internal/jsonx"
)

// A schema names, for each object of a document, the members it may hold.
// An object is identified by its path of member names from the top (""
// for the top-level object, "op", "op.set"); a nil list allows any member
// name (the options of a configuration change); an object at a path the
// schema does not list is refused. Members are never repeated, exactly or
// but for letter case, and null is never a value.
type schema map[string][]string

// strictFrame is one object or array checkStrict is inside.
type strictFrame struct {
	path    string          // the object's path; "#" for an array
	object  bool            // an object rather than an array
	seen    map[string]bool // folded names already read
	wantKey bool            // in an object, the next string is a name
	key     string          // in an object, the member being read
}

// checkStrict reports what encoding/json would let through silently: bytes
// that are not UTF-8 (replaced by U+FFFD when decoded), escapes that
// decode to U+FFFD (an unpaired surrogate), member names in other letter
// case (encoding/json matches names case-insensitively), repeated members
// (the last would win), unknown members, null values, a document that is
// not an object, and data after the document. It returns the paths of the
// schema's members present ("iss", "op.kind"), so that the caller can tell
// a missing member from a zero one.
//
// Messages name our members only, never a name or value the document
// chose: a token is a credential, and a refusal may end up in a log or an
// answer.
func checkStrict(data []byte, sc schema) (map[string]bool, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("bytes that are not UTF-8")
	}
	present := map[string]bool{}
	var stack []*strictFrame
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	done := false
	valueDone := func() {
		if len(stack) == 0 {
			done = true
			return
		}
		if top := stack[len(stack)-1]; top.object {
			top.wantKey = true
		}
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if !done {
				return nil, fmt.Errorf("truncated JSON")
			}
			return present, nil
		}
		if err != nil {
			return nil, fmt.Errorf("malformed JSON")
		}
		if done {
			return nil, fmt.Errorf("data after the JSON document")
		}
		if s, ok := tok.(string); ok && strings.ContainsRune(s, utf8.RuneError) {
			return nil, fmt.Errorf("a string holding U+FFFD or an unpaired surrogate escape")
		}
		if key, isString := tok.(string); isString && len(stack) > 0 && stack[len(stack)-1].object && stack[len(stack)-1].wantKey {
			top := stack[len(stack)-1]
			fold := jsonx.FoldName(key)
			if top.seen[fold] {
				return nil, fmt.Errorf("a member repeated, exactly or in other letter case, in %s", where(top.path))
			}
			top.seen[fold] = true
			if allowed := sc[top.path]; allowed != nil {
				name := ""
				for _, a := range allowed {
					if a == key {
						name = a
						break
					}
					if jsonx.FoldName(a) == fold {
						return nil, fmt.Errorf("member %q written in other letter case in %s", a, where(top.path))
					}
				}
				if name == "" {
					return nil, fmt.Errorf("an unknown member in %s", where(top.path))
				}
				present[join(top.path, name)] = true
			}
			top.key, top.wantKey = key, false
			continue
		}
		switch tok {
		case json.Delim('{'):
			path := "#"
			if n := len(stack); n == 0 {
				path = ""
			} else if p := stack[n-1]; p.object && sc[p.path] != nil {
				path = join(p.path, p.key)
			}
			if _, ok := sc[path]; !ok {
				return nil, fmt.Errorf("an object where none belongs")
			}
			stack = append(stack, &strictFrame{path: path, object: true, seen: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			if len(stack) == 0 {
				return nil, fmt.Errorf("the document is not an object")
			}
			stack = append(stack, &strictFrame{path: "#"})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			if len(stack) == 0 {
				return nil, fmt.Errorf("the document is not an object")
			}
			if tok == nil {
				return nil, fmt.Errorf("null where a value is required")
			}
			valueDone()
		}
	}
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func where(path string) string {
	if path == "" {
		return "the top-level object"
	}
	return fmt.Sprintf("%q", path)
}
