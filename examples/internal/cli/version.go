package cli

import (
	"flag"
	"fmt"
	"runtime/debug"
	"strings"
)

// RegisterVersion adds -version to fs; the program prints Version and exits
// ExitOK when it is set.
func RegisterVersion(fs *flag.FlagSet) *bool {
	return fs.Bool("version", false, "print the program's version and exit")
}

// Version describes the running binary: the program's name, guestward's
// module version (or "(devel)" for a build from a checkout), the commit and
// whether the tree was modified, when the build recorded them, and the Go
// version. One line, for bug reports and scripts.
func Version(program string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return program + " (no build information)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s guestward %s", program, bi.Main.Version)
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev != "" {
		fmt.Fprintf(&b, " commit %s", rev)
		if modified == "true" {
			b.WriteString(" (modified)")
		}
	}
	fmt.Fprintf(&b, " %s", bi.GoVersion)
	return b.String()
}
