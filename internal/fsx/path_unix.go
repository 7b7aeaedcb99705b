//go:build unix

package fsx

import (
	"errors"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
)

// NoFollow is the open flag that makes opening a symbolic link fail (with
// ELOOP) instead of opening what it leads to. With O_CREATE|O_EXCL a link
// already fails (the name exists); NoFollow also covers opening an existing
// file. It is zero where the platform has no such flag.
const NoFollow = syscall.O_NOFOLLOW

func resolve(name string) (string, error) {
	if name == "" {
		return "", errors.New("fsx: resolve: empty path")
	}
	abs := name
	if !filepath.IsAbs(name) {
		wd, err := os.Getwd()
		if err != nil {
			return "", err
		}
		// Joined as text, not cleaned: a ".." in name must go up from
		// where a link before it leads, which EvalSymlinks does and
		// filepath.Clean would not.
		abs = wd + string(filepath.Separator) + name
	}
	real, err := filepath.EvalSymlinks(abs)
	if errors.Is(err, fs.ErrNotExist) {
		// The file does not exist yet: resolve its directory.
		dir, base := filepath.Split(abs)
		if base == "" || base == "." || base == ".." {
			return "", err
		}
		rdir, derr := filepath.EvalSymlinks(dir)
		if derr != nil {
			return "", derr
		}
		real = filepath.Join(rdir, base)
		if fi, lerr := os.Lstat(real); lerr == nil {
			if fi.Mode()&fs.ModeSymlink != 0 {
				return "", unsafePath(real, "symbolic link to a file that does not exist; creating the file would create it where the link leads")
			}
			return "", unsafePath(real, "appeared while its path was being resolved")
		} else if !errors.Is(lerr, fs.ErrNotExist) {
			return "", lerr
		}
	} else if err != nil {
		return "", err
	}
	if err := checkResolvedDirs(filepath.Dir(real)); err != nil {
		return "", err
	}
	return real, nil
}

// checkResolvedDirs applies the directory rule of [OS.Resolve] to dir and
// every directory above it. dir holds no symbolic links.
func checkResolvedDirs(dir string) error {
	for {
		fi, err := os.Lstat(dir)
		if err != nil {
			return err
		}
		switch {
		case !fi.IsDir():
			return unsafePath(dir, "not a directory (mode "+fi.Mode().String()+"); did a link replace it?")
		case fi.Mode().Perm()&0o002 != 0 && fi.Mode()&os.ModeSticky == 0:
			return unsafePath(dir, "directory writable by others without the sticky bit (mode "+
				fi.Mode().String()+"): they could rename what is in it")
		case fi.Mode().Perm()&0o020 != 0 && fi.Mode()&os.ModeSticky == 0 && !privateGroup(fi):
			return unsafePath(dir, "directory writable by its group without the sticky bit (mode "+
				fi.Mode().String()+"), and the group is not this user's own: its members could rename what is in it")
		}
		if err := checkOwner(dir, fi); err != nil {
			return err
		}
		up := filepath.Dir(dir)
		if up == dir {
			return nil
		}
		dir = up
	}
}

// privateGroup reports whether fi, a directory, belongs to the caller's
// user and to the caller's user-private group: the caller's effective group,
// named as the user is. Distributions give a user such a group, and the
// umask 002 that makes new directories group-writable, together; such a
// group has no other member, so its write permission lets no one else in.
func privateGroup(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || int(st.Uid) != os.Geteuid() || int(st.Gid) != os.Getegid() {
		return false
	}
	u, err := user.LookupId(strconv.Itoa(os.Geteuid()))
	if err != nil {
		return false
	}
	g, err := user.LookupGroupId(strconv.FormatUint(uint64(st.Gid), 10))
	return err == nil && g.Name == u.Username
}

func checkPrivate(name string, fi os.FileInfo) error {
	if fi.Mode().Perm()&0o022 != 0 {
		return unsafePath(name, "writable by group or others (mode "+fi.Mode().String()+")")
	}
	return checkOwner(name, fi)
}

// checkOwner refuses what is owned by a user other than the caller's
// effective user and root. A FileInfo without a Stat_t (a simulated file
// system) has no owner to check.
func checkOwner(name string, fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return unsafePath(name, "owned by uid "+strconv.FormatUint(uint64(st.Uid), 10)+
			", neither this process's user (uid "+strconv.Itoa(os.Geteuid())+") nor root")
	}
	return nil
}

func links(fi os.FileInfo) (uint64, bool) {
	if l, ok := fi.(interface{ Links() uint64 }); ok {
		return l.Links(), true
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return uint64(st.Nlink), true
}
