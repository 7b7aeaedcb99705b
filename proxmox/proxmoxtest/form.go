package proxmoxtest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// decodeForm decodes an application/x-www-form-urlencoded body or a query
// string the way pve-http-server's decode_urlencoded does, quirks included:
//
//   - pairs are separated by '&' and by ';' (so a literal ';' in a value
//     must be sent as %3B);
//   - each pair is split on '=' and only the first two fields are kept, so
//     an unescaped '=' inside a value truncates it ("net0=virtio,bridge=x"
//     arrives as "virtio,bridge");
//   - a pair without a value ("a" or "a=") leaves the key present but
//     undefined: it is recorded in undef (when not nil) unless a value
//     for it arrives too;
//   - '+' means space and %XX is decoded (malformed escapes stay verbatim);
//   - a repeated key has its values joined with "\x00".
//
// Keys seen without a value are reported in undef so that they still count
// as "present in the request" where Proxmox cares (it mostly does not).
func decodeForm(s string, into map[string]string, undef map[string]bool) {
	for len(s) > 0 {
		var pair string
		if i := strings.IndexAny(s, "&;"); i >= 0 {
			pair, s = s[:i], s[i+1:]
		} else {
			pair, s = s, ""
		}
		fields := strings.Split(pair, "=")
		// Perl's split drops trailing empty fields.
		for len(fields) > 0 && fields[len(fields)-1] == "" {
			fields = fields[:len(fields)-1]
		}
		if len(fields) < 2 {
			// No key, or a key without a defined value.
			if len(fields) == 1 && undef != nil {
				undef[unescapeForm(fields[0])] = true
			}
			continue
		}
		k := unescapeForm(fields[0])
		v := unescapeForm(fields[1])
		if old, ok := into[k]; ok {
			v = old + "\x00" + v
		}
		into[k] = v
	}
}

func unescapeForm(s string) string {
	if !strings.ContainsAny(s, "+%") {
		return toValidUTF8(s)
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '+':
			b.WriteByte(' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	return toValidUTF8(b.String())
}

// toValidUTF8 mirrors Encode::decode('utf8', ...): malformed sequences become
// U+FFFD.
func toValidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// decodeJSONBody decodes an application/json request body. Scalars become
// the strings Proxmox's Perl side would see: numbers keep their text,
// true/false become 1/0, null means "not given". Arrays and objects are
// reported through bad so the caller can refuse them per parameter.
func decodeJSONBody(body []byte, into map[string]string) (bad map[string]string, err error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("malformed JSON body: %w", err)
	}
	for k, v := range m {
		switch x := v.(type) {
		case nil:
		case string:
			into[k] = x
		case json.Number:
			into[k] = x.String()
		case bool:
			if x {
				into[k] = "1"
			} else {
				into[k] = "0"
			}
		case []any:
			if bad == nil {
				bad = map[string]string{}
			}
			bad[k] = "ARRAY"
		default:
			if bad == nil {
				bad = map[string]string{}
			}
			bad[k] = "HASH"
		}
	}
	return bad, nil
}
