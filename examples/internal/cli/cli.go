// Package cli holds what the example programs share to turn flags and
// environment variables into guestward's building blocks: a Proxmox client,
// a journal whose backend the path's extension picks, and a logger. It is
// not part of guestward's API.
//
// Every setting has a flag and an environment variable; the flag wins.
// The token secret has no flag on purpose: a flag's value is visible to
// every user of the host in the process list. It comes from the environment
// or from a file that a flag or the environment names.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Exit codes shared by the example programs.
const (
	ExitOK = 0
	// ExitFailure: the program could not do its work (Proxmox unreachable
	// or refusing the token, journal locked or damaged, an operation that
	// failed).
	ExitFailure = 1
	// ExitUsage: a setting is wrong (a flag, an environment variable, or a
	// file they name).
	ExitUsage = 2
	// ExitNotConverged: a pass ran, but some declared guest is not in its
	// declared state (skipped, failed, in conflict, or, in a dry run,
	// with changes planned).
	ExitNotConverged = 3
)

// UsageError reports a wrong setting. Programs exit with ExitUsage for it.
// It is a plain value.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Usagef returns a *UsageError.
func Usagef(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// IsUsage reports whether err is, or wraps, a *UsageError.
func IsUsage(err error) bool {
	var ue *UsageError
	return errors.As(err, &ue)
}

// LookupEnv reads an environment variable, as os.LookupEnv does. Programs
// pass os.LookupEnv; tests pass a map. It must be safe to call from the
// goroutine that parses the settings; nothing else calls it.
type LookupEnv func(key string) (string, bool)

// MapEnv returns a LookupEnv reading m.
func MapEnv(m map[string]string) LookupEnv {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// Binding ties a flag to the environment variable that sets it when the
// flag is not given. It is a plain value.
type Binding struct {
	Flag, Env string
}

// ApplyEnv sets every bound flag that was not given on the command line
// from its environment variable, when that variable is set and not empty.
// Values are parsed by the flag itself, so they obey the same rules; a bad
// value is a *UsageError naming the variable.
func ApplyEnv(fs *flag.FlagSet, env LookupEnv, binds []Binding) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, b := range binds {
		if given[b.Flag] {
			continue
		}
		v, ok := env(b.Env)
		if !ok || v == "" {
			continue
		}
		if fs.Lookup(b.Flag) == nil {
			return fmt.Errorf("cli: binding for unknown flag -%s", b.Flag)
		}
		if err := fs.Set(b.Flag, v); err != nil {
			return Usagef("%s=%q: %v", b.Env, v, err)
		}
	}
	return nil
}

// Given reports whether the flag called name was set on the command line.
func Given(fs *flag.FlagSet, name string) bool {
	found := false
	fs.Visit(func(f *flag.Flag) { found = found || f.Name == name })
	return found
}

// Parse parses args into fs and returns a *UsageError for a bad command
// line or a stray argument, and flag.ErrHelp, after printing fs.Usage, for
// -h. It
// catches the mistake of passing the token secret as a flag before the flag
// package does, to say why that is refused.
func Parse(fs *flag.FlagSet, args []string) error {
	for _, a := range args {
		if a == "--" {
			break
		}
		name := strings.TrimLeft(a, "-")
		if name == a {
			continue
		}
		if n, _, _ := strings.Cut(name, "="); n == "token-secret" {
			return Usagef("the token secret is never taken from a flag, where every user of the host could read it in the process list: " +
				"set GUESTWARD_TOKEN_SECRET, or name a file with -token-secret-file")
		}
	}
	// The flag package prints its error and the whole usage on a bad flag;
	// the caller prints one clear line instead, and the usage only on -h.
	w := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(w)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.Usage()
			return err
		}
		return &UsageError{Msg: err.Error()}
	}
	if fs.NArg() > 0 {
		return Usagef("unexpected argument %q (all settings are flags)", fs.Arg(0))
	}
	return nil
}

// ListFlag is a flag.Value collecting a list: each use of the flag adds
// its comma-separated items. Like every flag.Value, it is set while flags
// are parsed and read afterwards, not concurrently.
type ListFlag []string

// String implements flag.Value.
func (l *ListFlag) String() string { return strings.Join(*l, ",") }

// Set implements flag.Value.
func (l *ListFlag) Set(v string) error {
	for _, item := range strings.Split(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			*l = append(*l, item)
		}
	}
	return nil
}

// ChoiceFlag is a flag.Value that accepts one of a fixed set of words. It
// is set while flags are parsed and read afterwards, not concurrently.
type ChoiceFlag struct {
	Value   string
	Choices []string
}

// String implements flag.Value.
func (c *ChoiceFlag) String() string {
	if c == nil {
		return ""
	}
	return c.Value
}

// Set implements flag.Value.
func (c *ChoiceFlag) Set(v string) error {
	for _, ch := range c.Choices {
		if v == ch {
			c.Value = v
			return nil
		}
	}
	return fmt.Errorf("must be one of %s", strings.Join(c.Choices, ", "))
}
