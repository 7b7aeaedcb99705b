package reconcile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/guestward/guestward/internal/jsonx"
	"github.com/guestward/guestward/proxmox"
)

// FileProvider reads the desired state from a JSON file, and reads it again
// whenever the file changes (another size, modification time or file, as
// after an atomic rename). The format is:
//
//	{
//	  "guests": [
//	    {
//	      "node": "pve1", "type": "qemu", "vmid": 100,
//	      "power": "running",
//	      "config": {"memory": 4096, "onboot": true, "tags": "web;prod"},
//	      "delete": ["ide2"]
//	    }
//	  ]
//	}
//
// Config values may be JSON strings, numbers (kept digit for digit) or
// booleans (sent as 1 and 0, as Proxmox takes them). The document is read
// strictly (see [ParseDesiredJSON]): a member that is unknown, misspelt,
// written in other letter case or given twice is an error, and so are
// bytes that are not UTF-8. "guests" is required: a state that manages no
// guest is written {"guests": []}.
//
// When the file cannot be read or is invalid (half-written, say),
// [FileProvider.Desired] keeps returning the last good state together with an
// error wrapping [ErrStale] and the cause; before any good state has been read
// it returns only the error, and the engine does nothing. It is safe for
// concurrent use.
type FileProvider struct {
	path    string
	maxSize int64
	opts    ValidateOptions

	mu      sync.Mutex
	stamp   fileStamp
	good    []Desired
	hasGood bool
	lastErr error
}

// fileStamp identifies one version of the file without reading it.
type fileStamp struct {
	info    os.FileInfo
	size    int64
	modTime time.Time
}

func (s fileStamp) same(info os.FileInfo) bool {
	return s.info != nil && os.SameFile(s.info, info) &&
		s.size == info.Size() && s.modTime.Equal(info.ModTime())
}

// DefaultMaxDesiredFileSize bounds the size of a desired-state file; larger
// files are refused rather than read into memory.
const DefaultMaxDesiredFileSize = 64 << 20

// NewFileProvider returns a provider reading path, which validates what it
// reads under the default [ValidateOptions]. It does not read the file yet;
// the first call to Desired does.
func NewFileProvider(path string) (*FileProvider, error) {
	return NewFileProviderWith(path, ValidateOptions{})
}

// NewFileProviderWith is [NewFileProvider] validating under opts. Invalid
// opts are refused with the error of [ValidateOptions.Validate].
func NewFileProviderWith(path string, opts ValidateOptions) (*FileProvider, error) {
	if path == "" {
		return nil, errors.New("reconcile: desired-state file path is empty")
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &FileProvider{path: path, maxSize: DefaultMaxDesiredFileSize,
		opts: ValidateOptions{AllowRootOnly: slices.Clone(opts.AllowRootOnly)}}, nil
}

// Path returns the file's path.
func (p *FileProvider) Path() string { return p.path }

// Desired returns the state in the file, reading it again if it changed.
func (p *FileProvider) Desired(ctx context.Context) ([]Desired, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ds, stamp, err := p.load()
	if err != nil {
		p.lastErr = err
		if p.hasGood {
			return p.good, fmt.Errorf("%w: keeping the last good state of %s: %w", ErrStale, p.path, err)
		}
		return nil, err
	}
	if ds != nil { // nil: unchanged since the last good read
		p.good, p.hasGood, p.stamp = ds, true, stamp
	}
	p.lastErr = nil
	return p.good, nil
}

// Err returns the error of the last read, nil if it succeeded.
func (p *FileProvider) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErr
}

// load reads and parses the file unless it is unchanged, in which case it
// returns nil and the current stamp.
func (p *FileProvider) load() ([]Desired, fileStamp, error) {
	f, err := os.Open(p.path)
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("reconcile: desired-state file: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("reconcile: desired-state file: %w", err)
	}
	stamp := fileStamp{info: info, size: info.Size(), modTime: info.ModTime()}
	if p.hasGood && p.stamp.same(info) {
		return nil, p.stamp, nil
	}
	if info.Size() > p.maxSize {
		return nil, fileStamp{}, fmt.Errorf("reconcile: desired-state file %s is %d bytes, more than the %d allowed", p.path, info.Size(), p.maxSize)
	}
	data, err := io.ReadAll(io.LimitReader(f, p.maxSize+1))
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("reconcile: desired-state file %s: %w", p.path, err)
	}
	if int64(len(data)) > p.maxSize {
		return nil, fileStamp{}, fmt.Errorf("reconcile: desired-state file %s is larger than the %d bytes allowed", p.path, p.maxSize)
	}
	ds, err := ParseDesiredJSONWith(data, p.opts)
	if err != nil {
		return nil, fileStamp{}, fmt.Errorf("reconcile: desired-state file %s: %w", p.path, err)
	}
	if ds == nil {
		ds = []Desired{} // a valid, empty state: distinct from "unchanged"
	}
	return ds, stamp, nil
}

// desiredFile is the JSON form of a desired state.
type desiredFile struct {
	Guests []desiredGuest `json:"guests"`
}

type desiredGuest struct {
	Node   string                     `json:"node"`
	Type   string                     `json:"type"`
	VMID   json.RawMessage            `json:"vmid"`
	Power  string                     `json:"power,omitempty"`
	Config map[string]json.RawMessage `json:"config,omitempty"`
	Delete []string                   `json:"delete,omitempty"`
}

// ParseDesiredJSON decodes and validates a desired state in the format of
// [FileProvider], under the default [ValidateOptions]. It returns a
// *DesiredError for a state that decodes but is invalid, and a decoding
// error, with the byte offset, for a malformed document.
//
// The document is read more strictly than encoding/json reads it, because
// each of its leniencies would let the file say one thing and the engine
// do another:
//
//   - Member names must be exactly those of the format. encoding/json
//     matches them ignoring letter case, so that "Power" after "power"
//     would replace it, and "VMID" alone would be taken for "vmid"; here a
//     name that is unknown, or known but written in other letter case, is
//     an error. A name is compared after its escapes are decoded: "vm\u0069d"
//     is "vmid".
//   - No object may hold two members whose names are equal, or equal
//     but for letter case (the case folding encoding/json applies),
//     inside "config" too: Proxmox's option names are lower-case, and two
//     spellings of one option must not collapse into one silently. An
//     option name that is not lower-case is refused by validation.
//   - The document must be an object with a "guests" member holding a
//     list: null there, or a document that is null, is an error rather
//     than a state that manages nothing, and so is a guest that is null.
//     An empty list is a valid state that manages no guest. Members of a
//     guest that may be left out (power, config, delete) may also be
//     null, which means the same.
//   - Bytes that are not UTF-8 are an error; encoding/json would replace
//     them with U+FFFD, so that a value other than the one written would
//     be sent.
//
// Positions are byte offsets from the start of the document: where the
// member's name, or the offending value, begins.
func ParseDesiredJSON(data []byte) ([]Desired, error) {
	return ParseDesiredJSONWith(data, ValidateOptions{})
}

// ParseDesiredJSONWith is [ParseDesiredJSON] validating under opts.
func ParseDesiredJSONWith(data []byte, opts ValidateOptions) ([]Desired, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if err := strictJSON(data); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	var f desiredFile
	if err := dec.Decode(&f); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return nil, fmt.Errorf("malformed JSON at byte %d: %w", syn.Offset, err)
		}
		return nil, fmt.Errorf("malformed desired state: %w", err)
	}
	if dec.More() {
		return nil, errors.New("malformed desired state: data after the top-level object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("malformed desired state: data after the top-level object")
	}
	if f.Guests == nil { // null is refused by strictJSON: the member is missing
		return nil, errors.New(`malformed desired state: no "guests" key; a state that manages no guest is {"guests": []}`)
	}
	var problems []string
	ds := make([]Desired, 0, len(f.Guests))
	for i, g := range f.Guests {
		d, p := g.desired(i)
		problems = append(problems, p...)
		ds = append(ds, d)
	}
	if len(problems) > 0 {
		return nil, &DesiredError{Problems: problems}
	}
	if err := ValidateDesiredWith(ds, opts); err != nil {
		return nil, err
	}
	sortDesired(ds)
	return ds, nil
}

// The member names of the document's objects, exactly as they must be
// written; TestDocumentMembersMatchStructTags keeps them in step with the
// struct tags.
var (
	topMembers   = []string{"guests"}
	guestMembers = []string{"node", "type", "vmid", "power", "config", "delete"}
)

// maxStrictDepth bounds the nesting strictJSON follows; encoding/json
// refuses deeper documents anyway.
const maxStrictDepth = 10000

// What an object or array of the document is, as far as strictJSON cares.
type jsonPlace int

const (
	placeOther  jsonPlace = iota
	placeTop              // the document's object
	placeGuests           // the list of guests
	placeGuest            // one guest
)

// strictJSON reports, with the byte offset, what encoding/json would let
// through silently: invalid UTF-8, member names that are unknown or in
// other letter case, members repeated exactly or but for case, and a null
// document, list of guests or guest. It leaves every other error to the
// decoder, whose messages are better: it stops quietly at malformed JSON.
func strictJSON(data []byte) error { return strictJSONAt(data, placeTop) }

// strictJSONAt is strictJSON for a document whose root is root: placeTop
// for a desired state, placeGuest for one guest (Desired's JSON form).
func strictJSONAt(data []byte, root jsonPlace) error {
	if !utf8.Valid(data) {
		off := 0
		for off < len(data) {
			r, n := utf8.DecodeRune(data[off:])
			if r == utf8.RuneError && n <= 1 {
				break
			}
			off += n
		}
		return fmt.Errorf("malformed desired state: invalid UTF-8 at byte %d", off)
	}
	type frame struct {
		place   jsonPlace
		keys    map[string]int64  // folded name -> offset; nil for an array
		names   map[string]string // folded name -> name as written
		wantKey bool              // in an object, the next string is a key
		index   int               // in an array, the next element's index
		key     string            // in an object, the member being read
	}
	var stack []*frame
	// path names the value the outer n frames are reading, as
	// guests[0].config. It is built only for a message: building it for
	// every frame would cost the square of the depth.
	path := func(n int) string {
		var b strings.Builder
		for _, f := range stack[:n] {
			if f.keys == nil {
				fmt.Fprintf(&b, "[%d]", f.index)
				continue
			}
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(f.key)
		}
		return b.String()
	}
	// in names the innermost object, for messages.
	in := func() string {
		if len(stack) == 1 {
			if root == placeGuest {
				return "the guest"
			}
			return "the top-level object"
		}
		return path(len(stack) - 1)
	}
	// valueDone moves the enclosing container past the value just read.
	valueDone := func() {
		if len(stack) == 0 {
			return
		}
		if top := stack[len(stack)-1]; top.keys == nil {
			top.index++
		} else {
			top.wantKey = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // the end, or malformed: the decoder says which
		}
		end := dec.InputOffset()
		if key, ok := tok.(string); ok && len(stack) > 0 && stack[len(stack)-1].wantKey {
			top := stack[len(stack)-1]
			at := stringStart(data, end)
			fold := jsonx.FoldName(key)
			if prev, dup := top.keys[fold]; dup {
				if top.names[fold] == key {
					return fmt.Errorf("malformed desired state: duplicate key %q in %s at byte %d (first at byte %d)", key, in(), at, prev)
				}
				return fmt.Errorf("malformed desired state: key %q in %s at byte %d repeats %q (at byte %d) in other letter case", key, in(), at, top.names[fold], prev)
			}
			var known []string
			switch top.place {
			case placeTop:
				known = topMembers
			case placeGuest:
				known = guestMembers
			}
			if known != nil && !slices.Contains(known, key) {
				for _, k := range known {
					if jsonx.FoldName(k) == fold {
						return fmt.Errorf("malformed desired state: key %q in %s at byte %d: keys are case-sensitive; write %q", key, in(), at, k)
					}
				}
				return fmt.Errorf("malformed desired state: unknown key %q in %s at byte %d", key, in(), at)
			}
			top.keys[fold], top.names[fold] = at, key
			top.key, top.wantKey = key, false
			continue
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) >= maxStrictDepth {
				return nil
			}
			f := &frame{place: placeOther}
			switch {
			case len(stack) == 0 && tok == json.Delim('{'):
				f.place = root
			case len(stack) > 0:
				parent := stack[len(stack)-1]
				switch {
				case parent.place == placeTop && parent.key == "guests" && tok == json.Delim('['):
					f.place = placeGuests
				case parent.place == placeGuests && tok == json.Delim('{'):
					f.place = placeGuest
				}
			}
			if tok == json.Delim('{') {
				f.keys, f.names, f.wantKey = map[string]int64{}, map[string]string{}, true
			}
			stack = append(stack, f)
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			if tok == nil {
				at := end - int64(len("null"))
				switch {
				case len(stack) == 0 && root == placeGuest:
					return fmt.Errorf("malformed desired state: the guest is null at byte %d; a guest is an object", at)
				case len(stack) == 0:
					return fmt.Errorf(`malformed desired state: the document is null at byte %d; a state that manages no guest is {"guests": []}`, at)
				case stack[len(stack)-1].place == placeTop && stack[len(stack)-1].key == "guests":
					return fmt.Errorf(`malformed desired state: "guests" is null at byte %d; a state that manages no guest is {"guests": []}`, at)
				case stack[len(stack)-1].place == placeGuests:
					return fmt.Errorf("malformed desired state: %s is null at byte %d; a guest is an object", path(len(stack)), at)
				}
			}
			valueDone()
		}
	}
}

// stringStart returns the offset of the opening quote of the JSON string
// that ends just before end. A string holds no unescaped quote, so the
// first quote back from its end that an even number of backslashes
// precede is its start.
func stringStart(data []byte, end int64) int64 {
	for i := end - 2; i >= 0; i-- {
		if data[i] != '"' {
			continue
		}
		n := int64(0)
		for j := i - 1; j >= 0 && data[j] == '\\'; j-- {
			n++
		}
		if n%2 == 0 {
			return i
		}
	}
	return 0
}

func (g desiredGuest) desired(i int) (Desired, []string) {
	return g.desiredAt(fmt.Sprintf("guests[%d]", i))
}

// desiredAt turns the guest into a Desired, naming it where in problems.
func (g desiredGuest) desiredAt(where string) (Desired, []string) {
	var problems []string
	vmid, err := strconv.Atoi(string(bytes.TrimSpace(g.VMID)))
	switch {
	case len(g.VMID) == 0:
		problems = append(problems, where+": vmid is missing")
	case err != nil:
		problems = append(problems, fmt.Sprintf("%s: vmid %s is not an integer", where, g.VMID))
	}
	d := Desired{
		Ref:    proxmox.Ref{Node: g.Node, Type: proxmox.GuestType(g.Type), VMID: vmid},
		Power:  Power(g.Power),
		Delete: g.Delete,
	}
	if len(g.Config) > 0 {
		d.Config = make(map[string]string, len(g.Config))
		for _, k := range sortedRawKeys(g.Config) {
			v, err := configValue(g.Config[k])
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s (%s): option %q: %v", where, d.Ref, k, err))
				continue
			}
			d.Config[k] = v
		}
	}
	return d, problems
}

// configValue turns a JSON config value into the string Proxmox takes.
func configValue(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", errors.New("no value")
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", err
		}
		return s, nil
	case 't', 'f':
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return "", err
		}
		if b {
			return "1", nil
		}
		return "0", nil
	case 'n':
		return "", errors.New("null is not a value; list the option in delete to remove it")
	case '{', '[':
		return "", errors.New("objects and arrays are not option values; write property strings and lists as strings")
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", err
	}
	return n.String(), nil
}

func sortedRawKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
