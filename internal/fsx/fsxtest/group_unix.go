//go:build unix

package fsxtest

import (
	"os"
	"testing"
)

// ForeignGroup gives the file or directory name to a group that is not the
// caller's effective group (nobody's, 65534, when running as root; another
// of the caller's groups otherwise), for tests of what group ownership
// allows. It reports false when the caller has no other group to give.
func ForeignGroup(t testing.TB, name string) bool {
	t.Helper()
	gid := -1
	if os.Geteuid() == 0 {
		gid = 65534
	} else if groups, err := os.Getgroups(); err == nil {
		for _, g := range groups {
			if g != os.Getegid() {
				gid = g
				break
			}
		}
	}
	if gid < 0 {
		return false
	}
	if err := os.Chown(name, -1, gid); err != nil {
		t.Fatal(err)
	}
	return true
}
