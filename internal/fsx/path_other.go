//go:build !unix

package fsx

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// NoFollow is zero where the platform has no flag to refuse opening a
// symbolic link. O_CREATE|O_EXCL still refuses a name that exists, link or
// not.
const NoFollow = 0

// resolve resolves links but checks no permissions: Windows grants access
// through ACLs, which this package does not read.
func resolve(name string) (string, error) {
	if name == "" {
		return "", errors.New("fsx: resolve: empty path")
	}
	abs, err := filepath.Abs(name)
	if err != nil {
		return "", err
	}
	real, err := filepath.EvalSymlinks(abs)
	if errors.Is(err, fs.ErrNotExist) {
		dir, base := filepath.Split(abs)
		rdir, derr := filepath.EvalSymlinks(dir)
		if derr != nil {
			return "", derr
		}
		real = filepath.Join(rdir, base)
		if _, lerr := os.Lstat(real); lerr == nil {
			return "", unsafePath(real, "symbolic link to a file that does not exist")
		}
		return real, nil
	}
	return real, err
}

func checkPrivate(string, os.FileInfo) error { return nil }

func links(fi os.FileInfo) (uint64, bool) {
	if l, ok := fi.(interface{ Links() uint64 }); ok {
		return l.Links(), true
	}
	return 0, false
}
