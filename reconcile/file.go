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
	"sync"
	"time"
	"unicode/utf8"

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
// booleans (sent as 1 and 0, as Proxmox takes them). Unknown fields are
// errors, so that a misspelt "confg" is not silently ignored; so are a
// field given twice in one object and bytes that are not UTF-8.
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
// error, with the offset, for malformed JSON.
//
// Two things encoding/json lets through silently are errors here: bytes
// that are not UTF-8 (it would replace them with U+FFFD, so that a value
// other than the one written would be sent) and a member given twice in
// one object (it would keep the last, so that a guest, an option or the
// whole list of guests could vanish without a word).
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

// maxStrictDepth bounds the nesting strictJSON follows; encoding/json
// refuses deeper documents anyway.
const maxStrictDepth = 10000

// strictJSON reports invalid UTF-8 and repeated object members in data,
// with the byte offset. It leaves every other error to the decoder, whose
// messages are better: it stops quietly at malformed JSON.
func strictJSON(data []byte) error {
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
		path    string
		keys    map[string]bool // nil for an array
		wantKey bool            // in an object, the next string is a key
		index   int             // in an array, the next element's index
		key     string          // in an object, the member being read
	}
	var stack []*frame
	// where names the value about to be read, as guests[0].config.
	where := func() string {
		if len(stack) == 0 {
			return ""
		}
		top := stack[len(stack)-1]
		if top.keys == nil {
			return fmt.Sprintf("%s[%d]", top.path, top.index)
		}
		if top.path == "" {
			return top.key
		}
		return top.path + "." + top.key
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
		if key, ok := tok.(string); ok && len(stack) > 0 && stack[len(stack)-1].wantKey {
			top := stack[len(stack)-1]
			if top.keys[key] {
				in := top.path
				if in == "" {
					in = "the top-level object"
				}
				return fmt.Errorf("malformed desired state: duplicate key %q in %s at byte %d", key, in, dec.InputOffset())
			}
			top.keys[key], top.key, top.wantKey = true, key, false
			continue
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			if len(stack) >= maxStrictDepth {
				return nil
			}
			f := &frame{path: where()}
			if tok == json.Delim('{') {
				f.keys, f.wantKey = map[string]bool{}, true
			}
			stack = append(stack, f)
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
	}
}

func (g desiredGuest) desired(i int) (Desired, []string) {
	var problems []string
	where := fmt.Sprintf("guests[%d]", i)
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
