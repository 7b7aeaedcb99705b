package proxmox

import (
	"errors"
	"net/url"
	"regexp"
	"strings"
	"testing"
)

// queryLen counts what url.QueryEscape would make of a string, byte class
// by byte class.
func TestQueryLen(t *testing.T) {
	for _, s := range []string{"", "abcXYZ019", "-_.~", " ", "a b", "&=+%,/:;?@#", "ü", "\x00\x7f\xff", "virtio=AA:BB,bridge=vmbr0"} {
		if got, want := queryLen(s), len(url.QueryEscape(s)); got != want {
			t.Errorf("queryLen(%q) = %d, want %d", s, got, want)
		}
	}
}

// pveConfigID is the option-name rule as ASCII: what isConfigKey must
// accept, and nothing more.
var pveConfigID = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_-]+$`)

// A name is an option name exactly when it is ASCII pve-configid: the
// case-insensitive regular expression this replaced also let the Kelvin
// sign and the long s through (Unicode folds them to k and s), which no
// Proxmox option name holds.
func TestIsConfigKey(t *testing.T) {
	for _, k := range []string{"memory", "net0", "Memory", "a-b_c", "ab", "a", "", "0net", "-x", "net 0", "n\u212Aey", "\u017Fcsi0", "memory\n", "mémoire", "a\x00"} {
		if got, want := isConfigKey(k), pveConfigID.MatchString(k); got != want {
			t.Errorf("isConfigKey(%q) = %v, want %v", k, got, want)
		}
	}
	for _, s := range []string{strings.Repeat("a", 40), strings.Repeat("F", 40), "0123456789abcdefABCDEF0123456789abcdef01"} {
		if !isDigest(s) {
			t.Errorf("isDigest(%q) = false", s)
		}
	}
	for _, s := range []string{"", strings.Repeat("a", 39), strings.Repeat("a", 41), strings.Repeat("g", 40), strings.Repeat("a", 39) + "\xe1", strings.Repeat("a", 39) + "G"} {
		if isDigest(s) {
			t.Errorf("isDigest(%q) = true", s)
		}
	}
}

// The size check measures the request form builds, to the byte: a change
// whose encoded request is exactly the limit passes, one byte more fails,
// whichever byte classes fill it (plain, space, escaped, multi-byte).
func TestConfigChangeSizeLimit(t *testing.T) {
	fills := map[string]string{"plain": "a", "space": " ", "escaped": ",", "multi-byte": "é"}
	for name, unit := range fills {
		t.Run(name, func(t *testing.T) {
			base := ConfigChange{Set: map[string]string{"net0": "virtio=AA:BB:CC:DD:EE:FF,bridge=vmbr0"},
				Delete: []string{"ide2", "sata1", "ide2"}, Digest: strings.Repeat("ab", 20)}
			form, err := base.form()
			if err != nil {
				t.Fatal(err)
			}
			room := maxBody - len(form.Encode()) - len("&x1=")
			per := len(url.QueryEscape(unit))
			desc := strings.Repeat(unit, room/per) + strings.Repeat("a", room%per)
			at := base
			at.Set = map[string]string{"net0": base.Set["net0"], "x1": desc}
			if f, err := at.form(); err != nil || len(f.Encode()) != maxBody {
				t.Fatalf("at the limit: %v (encoded %d bytes)", err, len(f.Encode()))
			}
			over := at
			over.Set = map[string]string{"net0": base.Set["net0"], "x1": desc + "a"}
			if err := over.Validate(); !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("a byte over: %v", err)
			}
		})
	}
}

// FuzzConfigChangeCheck holds check to what form builds: a change check
// accepts encodes to the size it measured, and names and digests are
// accepted exactly by their rules.
func FuzzConfigChangeCheck(f *testing.F) {
	f.Add("memory", "1024", "net0", "virtio=AA:BB,bridge=vmbr0", "ide2,ide2,sata1", strings.Repeat("0", 40))
	f.Add("description", "line one\nline two & more", "tags", "a;b", "", "")
	f.Add("n\u212Aey", "x", "Cores", "4", "DELETE", "zz")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, del, digest string) {
		ch := ConfigChange{Set: map[string]string{k1: v1, k2: v2}, Digest: digest}
		if del != "" {
			ch.Delete = strings.Split(del, ",")
		}
		_, size, err := ch.check()
		if err != nil {
			if !errors.Is(err, ErrInvalidConfig) {
				t.Fatalf("error %v does not match ErrInvalidConfig", err)
			}
			return
		}
		form, err := ch.form()
		if err != nil {
			t.Fatalf("check accepted what form refuses: %v", err)
		}
		if n := len(form.Encode()); n != size {
			t.Fatalf("check measured %d bytes, form encodes %d", size, n)
		}
		for k := range ch.Set {
			if !pveConfigID.MatchString(k) {
				t.Fatalf("accepted option name %q", k)
			}
		}
		for _, k := range ch.Delete {
			if !pveConfigID.MatchString(k) {
				t.Fatalf("accepted option name %q to delete", k)
			}
		}
		if digest != "" && !regexp.MustCompile(`^[0-9a-fA-F]{40}$`).MatchString(digest) {
			t.Fatalf("accepted digest %q", digest)
		}
	})
}
