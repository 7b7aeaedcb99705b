package cli

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"log/slog"
)

func TestApplyEnvFlagWins(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	url := fs.String("url", "", "")
	iv := fs.Duration("interval", time.Second, "")
	if err := Parse(fs, []string{"-url", "https://flag:8006"}); err != nil {
		t.Fatal(err)
	}
	env := MapEnv(map[string]string{"GUESTWARD_URL": "https://env:8006", "GUESTWARD_INTERVAL": "5s"})
	if err := ApplyEnv(fs, env, []Binding{{"url", "GUESTWARD_URL"}, {"interval", "GUESTWARD_INTERVAL"}}); err != nil {
		t.Fatal(err)
	}
	if *url != "https://flag:8006" {
		t.Errorf("url = %q, want the flag's value: a flag on the command line wins", *url)
	}
	if *iv != 5*time.Second {
		t.Errorf("interval = %v, want 5s from the environment", *iv)
	}
}

func TestApplyEnvBadValueNamesTheVariable(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.Duration("interval", time.Second, "")
	err := ApplyEnv(fs, MapEnv(map[string]string{"GUESTWARD_INTERVAL": "soon"}), []Binding{{"interval", "GUESTWARD_INTERVAL"}})
	if !IsUsage(err) || !strings.Contains(err.Error(), "GUESTWARD_INTERVAL") {
		t.Fatalf("err = %v, want a usage error naming GUESTWARD_INTERVAL", err)
	}
}

func TestApplyEnvEmptyIsUnset(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	url := fs.String("url", "default", "")
	if err := ApplyEnv(fs, MapEnv(map[string]string{"GUESTWARD_URL": ""}), []Binding{{"url", "GUESTWARD_URL"}}); err != nil {
		t.Fatal(err)
	}
	if *url != "default" {
		t.Errorf("url = %q, want the default: an empty variable counts as unset", *url)
	}
}

func TestParseRefusesSecretFlag(t *testing.T) {
	for _, args := range [][]string{
		{"-token-secret", "s3cret"},
		{"--token-secret=s3cret"},
		{"-url", "https://x", "-token-secret=s3cret"},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(new(bytes.Buffer))
		fs.String("url", "", "")
		err := Parse(fs, args)
		if !IsUsage(err) || !strings.Contains(err.Error(), "never taken from a flag") {
			t.Errorf("Parse(%q) = %v, want the explanation why a secret is not a flag", args, err)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Parse(%q) repeats the secret in its error: %v", args, err)
		}
	}
}

func TestParseStrayArgument(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	if err := Parse(fs, []string{"extra"}); !IsUsage(err) {
		t.Fatalf("err = %v, want a usage error", err)
	}
}

func TestParseHelp(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(new(bytes.Buffer))
	if err := Parse(fs, []string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("err = %v, want flag.ErrHelp", err)
	}
}

func TestListFlag(t *testing.T) {
	var l ListFlag
	for _, v := range []string{"a,b", " c ", ",,"} {
		if err := l.Set(v); err != nil {
			t.Fatal(err)
		}
	}
	if got := l.String(); got != "a,b,c" {
		t.Errorf("list = %q, want a,b,c", got)
	}
}

func TestChoiceFlag(t *testing.T) {
	c := ChoiceFlag{Value: "text", Choices: []string{"text", "json"}}
	if err := c.Set("xml"); err == nil || c.Value != "text" {
		t.Errorf("Set(xml) = %v, value %q: want an error and the value kept", err, c.Value)
	}
	if err := c.Set("json"); err != nil || c.Value != "json" {
		t.Errorf("Set(json) = %v, value %q", err, c.Value)
	}
}

func TestBackend(t *testing.T) {
	for path, want := range map[string]string{
		"/var/lib/guestward/journal":     BackendFile,
		"/var/lib/guestward/journal.log": BackendFile,
		"journal.db":                     BackendBolt,
		"journal.DB":                     BackendBolt,
		"j.bolt":                         BackendBolt,
		"j.bbolt":                        BackendBolt,
		"j.db.bak":                       BackendFile,
	} {
		if got := Backend(path); got != want {
			t.Errorf("Backend(%q) = %s, want %s", path, got, want)
		}
	}
}

func TestOpenJournalBothBackendsAndLock(t *testing.T) {
	for _, name := range []string{"journal", "journal.db"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), name)
			j, backend, err := OpenJournal(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if backend != Backend(path) {
				t.Errorf("backend = %s, want %s", backend, Backend(path))
			}
			_, _, err = OpenJournal(path, nil)
			if err == nil || !strings.Contains(err.Error(), "in use by another process") {
				t.Errorf("second open: %v, want a message saying the journal is in use", err)
			}
			if err := j.Close(); err != nil {
				t.Fatal(err)
			}
			j, _, err = OpenJournal(path, nil)
			if err != nil {
				t.Fatalf("reopen after close: %v", err)
			}
			j.Close()
		})
	}
}

func TestOpenJournalNoPath(t *testing.T) {
	if _, _, err := OpenJournal("", nil); !IsUsage(err) {
		t.Fatalf("err = %v, want a usage error", err)
	}
}

func TestConnSecretSources(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "secret")
	if err := os.WriteFile(good, []byte("  f00d-cafe\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := Conn{URL: "https://pve:8006", TokenID: "guestward@pve!agent", Timeout: time.Minute}
	cases := []struct {
		name    string
		file    string
		env     map[string]string
		wantErr string // "" means success
	}{
		{name: "env", env: map[string]string{EnvTokenSecret: "f00d"}},
		{name: "file", file: good},
		{name: "both", file: good, env: map[string]string{EnvTokenSecret: "f00d"}, wantErr: "given twice"},
		{name: "none", wantErr: "no API token secret"},
		{name: "missing file", file: filepath.Join(dir, "nope"), wantErr: "token secret file"},
		{name: "empty file", file: empty, wantErr: "is empty"},
		{name: "directory", file: dir, wantErr: "not a regular file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			conn := base
			conn.SecretFile = c.file
			_, err := conn.Client(MapEnv(c.env), nil)
			if c.wantErr == "" {
				if err != nil {
					t.Fatalf("Client: %v", err)
				}
				return
			}
			if !IsUsage(err) || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("Client: %v, want a usage error containing %q", err, c.wantErr)
			}
		})
	}
}

func TestConnWarnsAboutReadableSecretFile(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permission bits")
	}
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte("f00d"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o644); err != nil { // whatever the umask did
		t.Fatal(err)
	}
	var log bytes.Buffer
	conn := Conn{URL: "https://pve:8006", TokenID: "guestward@pve!agent", SecretFile: path, Timeout: time.Minute}
	if _, err := conn.Client(MapEnv(nil), slog.New(slog.NewTextHandler(&log, nil))); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "chmod 600") {
		t.Errorf("log = %q, want a warning about the file's permissions", log.String())
	}
	if strings.Contains(log.String(), "f00d") {
		t.Errorf("the log repeats the secret: %q", log.String())
	}
}

func TestConnBadSettings(t *testing.T) {
	env := MapEnv(map[string]string{EnvTokenSecret: "f00d"})
	pemless := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(pemless, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		conn Conn
		want string
	}{
		{"no url", Conn{TokenID: "guestward@pve!agent", Timeout: time.Minute}, "no Proxmox URL"},
		{"no token", Conn{URL: "https://pve:8006", Timeout: time.Minute}, "no API token"},
		{"http", Conn{URL: "http://pve:8006", TokenID: "guestward@pve!agent", Timeout: time.Minute}, "https"},
		{"fingerprint", Conn{URL: "https://pve:8006", TokenID: "guestward@pve!agent", Fingerprints: ListFlag{"zz"}, Timeout: time.Minute}, "fingerprint"},
		{"ca without pem", Conn{URL: "https://pve:8006", TokenID: "guestward@pve!agent", CAFile: pemless, Timeout: time.Minute}, "no PEM certificate"},
		{"ca missing", Conn{URL: "https://pve:8006", TokenID: "guestward@pve!agent", CAFile: pemless + ".nope", Timeout: time.Minute}, "CA file"},
		{"timeout", Conn{URL: "https://pve:8006", TokenID: "guestward@pve!agent"}, "http-timeout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.conn.Client(env, nil)
			if !IsUsage(err) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Client: %v, want a usage error containing %q", err, c.want)
			}
			if strings.Contains(err.Error(), "f00d") {
				t.Errorf("the error repeats the secret: %v", err)
			}
		})
	}
}
