package proxmox

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Proxmox is written in Perl, whose scalars flip between string and number
// depending on their history, and PVE 7 and 8 type some fields differently
// (QEMU memory, LXC vmid). Every numeric and boolean field is therefore
// decoded leniently: a JSON number, a numeric string, or absent/null/"".

// flexInt is an integer sent as a number or a string.
type flexInt int64

func (f *flexInt) UnmarshalJSON(b []byte) error {
	s, ok, err := scalarText(b)
	if err != nil || !ok {
		*f = 0
		return err
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		*f = flexInt(n)
		return nil
	}
	x, err := strconv.ParseFloat(s, 64)
	if err != nil || x != math.Trunc(x) || math.Abs(x) > 1<<62 {
		return fmt.Errorf("not an integer: %s", quoteValue(s))
	}
	*f = flexInt(x)
	return nil
}

// flexFloat is a number sent as a number or a string.
type flexFloat float64

func (f *flexFloat) UnmarshalJSON(b []byte) error {
	s, ok, err := scalarText(b)
	if err != nil || !ok {
		*f = 0
		return err
	}
	x, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("not a number: %s", quoteValue(s))
	}
	*f = flexFloat(x)
	return nil
}

// flexBool is a boolean sent as 1/0, true/false, or a string spelling of
// those ("1", "yes", "on", "true" and their negations), as Proxmox's own
// deserializers accept.
type flexBool bool

func (f *flexBool) UnmarshalJSON(b []byte) error {
	s, ok, err := scalarText(b)
	if err != nil || !ok {
		*f = false
		return err
	}
	v, ok := parseBool(s)
	if !ok {
		return fmt.Errorf("not a boolean: %s", quoteValue(s))
	}
	*f = flexBool(v)
	return nil
}

func parseBool(s string) (bool, bool) {
	switch strings.ToLower(s) {
	case "1", "true", "yes", "on":
		return true, true
	case "0", "false", "no", "off":
		return false, true
	}
	return false, false
}

// flexString is a string that may arrive as a number or boolean.
type flexString string

func (f *flexString) UnmarshalJSON(b []byte) error {
	s, _, err := valueText(b)
	*f = flexString(s)
	return err
}

// scalarText returns the text of a JSON scalar: a string's contents, a
// number's digits, "1"/"0" for true/false. ok is false for null and for the
// empty string, which Proxmox uses interchangeably with absence.
func scalarText(b []byte) (s string, ok bool, err error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "", false, nil
	}
	switch b[0] {
	case 'n':
		if string(b) == "null" {
			return "", false, nil
		}
	case 't':
		if string(b) == "true" {
			return "1", true, nil
		}
	case 'f':
		if string(b) == "false" {
			return "0", true, nil
		}
	case '"':
		s, err := jsonString(b)
		if err != nil {
			return "", false, err
		}
		s = strings.TrimSpace(s)
		return s, s != "", nil
	case '{', '[':
		return "", false, fmt.Errorf("expected a scalar, got %c", b[0])
	default:
		if json.Valid(b) {
			return string(b), true, nil
		}
	}
	return "", false, fmt.Errorf("invalid JSON scalar: %s", quoteValue(string(b)))
}

// jsonString decodes a JSON string literal, without reflection when it has
// no escapes.
func jsonString(b []byte) (string, error) {
	if len(b) >= 2 && b[0] == '"' && b[len(b)-1] == '"' {
		inner := b[1 : len(b)-1]
		if bytes.IndexByte(inner, '\\') < 0 && bytes.IndexByte(inner, '"') < 0 && utf8.Valid(inner) && !hasControl(inner) {
			return string(inner), nil
		}
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return "", err
	}
	return s, nil
}

func hasControl(b []byte) bool {
	for _, c := range b {
		if c < 0x20 {
			return true
		}
	}
	return false
}

// valueText renders any JSON value as the string Config.Values holds:
// strings unquoted, numbers verbatim (no float reformatting: "0.4" stays
// "0.4", 2048 stays "2048"), true/false as "1"/"0" (Proxmox's boolean
// spelling), arrays and objects as compact JSON. present is false for null.
func valueText(b []byte) (s string, present bool, err error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return "", false, fmt.Errorf("empty JSON value")
	}
	switch b[0] {
	case '"':
		s, err := jsonString(b)
		return s, err == nil, err
	case 'n':
		if string(b) == "null" {
			return "", false, nil
		}
	case 't':
		if string(b) == "true" {
			return "1", true, nil
		}
	case 'f':
		if string(b) == "false" {
			return "0", true, nil
		}
	case '{', '[':
		var buf bytes.Buffer
		if err := json.Compact(&buf, b); err != nil {
			return "", false, err
		}
		return buf.String(), true, nil
	default:
		if json.Valid(b) {
			return string(b), true, nil
		}
	}
	return "", false, fmt.Errorf("invalid JSON value: %s", quoteValue(string(b)))
}

// envelope is Proxmox's response wrapper. Success: {"data": ...} with an
// optional "total". Failure: {"data": null, "errors": {...}} and, from PVE
// 8.3, "message".
type envelope struct {
	Data    json.RawMessage            `json:"data"`
	Total   *flexInt                   `json:"total"`
	Message json.RawMessage            `json:"message"`
	Errors  map[string]json.RawMessage `json:"errors"`
}

// decodeData unmarshals a 2xx body's data member into out (nil out: the
// data is ignored). It returns the envelope's total, or -1 when absent.
func decodeData(body []byte, out any) (total int64, err error) {
	var env envelope
	if err := json.Unmarshal(body, &env); err != nil {
		return -1, fmt.Errorf("%w: body is not a JSON envelope: %v", ErrUnexpectedResponse, err)
	}
	total = -1
	if env.Total != nil {
		total = int64(*env.Total)
	}
	if out == nil {
		return total, nil
	}
	if len(env.Data) == 0 {
		return total, fmt.Errorf("%w: envelope has no data member", ErrUnexpectedResponse)
	}
	if _, ok := out.(interface{ acceptsNull() }); !ok && string(bytes.TrimSpace(env.Data)) == "null" {
		return total, fmt.Errorf("%w: data is null", ErrUnexpectedResponse)
	}
	if u, ok := out.(interface{ unmarshalData([]byte) error }); ok {
		// env.Data is valid JSON: json.Unmarshal has checked the whole
		// body, which the in-place walkers (forEachMember) rely on.
		err = u.unmarshalData(env.Data)
	} else {
		err = json.Unmarshal(env.Data, out)
	}
	if err != nil {
		return total, fmt.Errorf("%w: %v", ErrUnexpectedResponse, err)
	}
	return total, nil
}

// decodeAPIError builds the error for a non-2xx response. status is the
// numeric code; statusLine is the response's Status ("500 VM 100 not
// running"); body may be empty, JSON, or (HTTP-layer errors on PVE 8.3+)
// plain text. It never fails: whatever it cannot parse, it leaves out.
func decodeAPIError(method, path string, status int, statusLine string, body []byte) *APIError {
	e := &APIError{StatusCode: status, Method: method, Path: path}
	reason := strings.TrimPrefix(statusLine, strconv.Itoa(status))
	reason = strings.TrimSpace(reason)
	var env envelope
	if len(bytes.TrimSpace(body)) > 0 && json.Unmarshal(body, &env) == nil {
		if s, ok, _ := valueText(env.Message); ok {
			e.Message = cleanText(s)
		}
		for k, v := range env.Errors {
			s, ok, err := valueText(v)
			if err != nil || !ok {
				continue
			}
			if e.Errors == nil {
				e.Errors = make(map[string]string, len(env.Errors))
			}
			e.Errors[k] = cleanText(s)
		}
	}
	if e.Message == "" {
		e.Message = cleanText(reason)
	}
	return e
}

// cleanText removes trailing whitespace (Proxmox messages end in "\n") and
// replaces invalid UTF-8, so messages are safe to log and compare.
func cleanText(s string) string {
	s = strings.TrimRight(s, " \t\r\n")
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	return s
}
