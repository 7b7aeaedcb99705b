// Package fsxtest provides [FS], an in-memory file system that models what a
// power loss leaves on disk, for crash tests of code that writes through
// [fsx.FS].
//
// # The model
//
// The running program sees every write, rename and removal at once, as with
// a real kernel. The disk only holds what was made durable:
//
//   - a file's contents and size become durable when the file is synced
//     ([fsx.File.Sync]); until then its writes and truncations are pending;
//   - a directory's entries (files created, renamed or removed in it) become
//     durable when the directory is synced ([fsx.FS.SyncDir]); until then
//     those changes are pending.
//
// [FS.Recover] builds the file system a reboot would find: the durable state,
// plus a chosen prefix of each directory's and each file's pending changes,
// with the last surviving write of a file optionally torn (cut short, or with
// some 512-byte sectors never written). Any prefix is a state a real disk can
// show, because file systems commit metadata in order and a write reaches the
// platter sector by sector.
//
// [FS.CrashAfter] makes the machine lose power at a chosen point: the first n
// mutating operations succeed and every operation after them fails with
// [ErrCrashed], as if the program had died there. Counting the operations of
// a dry run ([FS.Ops]) lets a test crash at every point in turn.
//
// # Limits
//
// Directories are implicit (any path's parent exists), a rename must stay in
// one directory, links, permissions checks and sparse files are not modelled
// ([FS.Resolve] only cleans the path), and locks taken with [FS.Lock] and
// [fsx.File.TryLock] are per FS value. Reads see the running
// program's view; they do not count as operations.
package fsxtest

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/guestward/guestward/internal/fsx"
)

// ErrCrashed is returned by every operation after the crash point set with
// [FS.CrashAfter] has been reached.
var ErrCrashed = errors.New("fsxtest: simulated power loss")

// SectorSize is the unit in which [TearSectors] loses a torn write.
const SectorSize = 512

// FS is a simulated disk. Create one with [New]. It is safe for concurrent
// use, and so are the files it opens.
type FS struct {
	mu      sync.Mutex
	live    map[string]*inode  // names the running program sees
	durable map[string]*inode  // names a reboot would find
	pending map[string][]dirOp // per directory: unsynced name changes, oldest first
	ops     int                // mutating operations performed
	crashAt int                // operations allowed before the crash; negative: never
	crashed bool
	trace   []string
	locks   map[string]bool
	ilocks  map[*inode]*file // inode locks taken with TryLock, by holder
}

type inode struct {
	data    []byte   // contents as the program sees them
	synced  []byte   // contents on disk
	pending []fileOp // unsynced writes and truncations, oldest first
	perm    os.FileMode
}

type fileOp struct {
	truncate bool
	off      int64 // write offset, or new size for a truncation
	data     []byte
}

type dirOp struct {
	kind string // "create", "rename", "remove"
	name string
	new  string
	ino  *inode
}

var _ fsx.FS = (*FS)(nil)

// New returns an empty simulated disk that never crashes until
// [FS.CrashAfter] says so.
func New() *FS {
	return &FS{
		live:    make(map[string]*inode),
		durable: make(map[string]*inode),
		pending: make(map[string][]dirOp),
		crashAt: -1,
		locks:   make(map[string]bool),
		ilocks:  make(map[*inode]*file),
	}
}

// CrashAfter makes the simulated machine lose power once n mutating
// operations (counted since the FS was created, see [FS.Ops]) have been
// performed: operation n+1 and everything after it fail with [ErrCrashed].
// A negative n disables the crash.
func (s *FS) CrashAfter(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.crashAt = n
	s.crashed = n >= 0 && s.ops >= n
}

// Crashed reports whether the crash point has been reached.
func (s *FS) Crashed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.crashed
}

// Ops returns the number of mutating operations performed so far: creating
// or truncating a file on open, writes, syncs, truncations, renames, removals
// and directory syncs.
func (s *FS) Ops() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ops
}

// Trace returns a description of every mutating operation performed so far,
// in order, for failure messages.
func (s *FS) Trace() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.trace)
}

// step counts one mutating operation, or fails it if the machine is off.
// s.mu must be held.
func (s *FS) step(format string, args ...any) error {
	if s.crashed {
		return ErrCrashed
	}
	if s.crashAt >= 0 && s.ops >= s.crashAt {
		s.crashed = true
		return ErrCrashed
	}
	s.ops++
	s.trace = append(s.trace, fmt.Sprintf(format, args...))
	return nil
}

// Crash describes which pending changes survive a power loss; see the
// package documentation for the model.
type Crash struct {
	// DirOps is how many of each directory's pending name changes
	// survive, oldest first. Negative: all of them.
	DirOps int
	// FileOps is how many of each file's pending writes and truncations
	// survive, oldest first. Negative: all of them.
	FileOps int
	// Tear, when set, rewrites the last surviving pending write of each
	// file: it receives the written bytes and returns what reached the
	// disk, which may be shorter (a prefix) or hold zeros for sectors that
	// were never written. See [TearPrefix] and [TearSectors].
	Tear func(data []byte) []byte
}

// Recover returns the file system a reboot after a power loss would find,
// as chosen by c. s itself is unchanged and may be recovered again with
// another choice. The result has no crash point and no locks held.
func (s *FS) Recover(c Crash) *FS {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make(map[string]*inode, len(s.durable))
	for n, ino := range s.durable {
		names[n] = ino
	}
	for _, ops := range s.pending {
		k := len(ops)
		if c.DirOps >= 0 && c.DirOps < k {
			k = c.DirOps
		}
		for _, op := range ops[:k] {
			applyDirOp(names, op)
		}
	}
	out := New()
	copies := make(map[*inode]*inode)
	for n, ino := range names {
		cp, ok := copies[ino]
		if !ok {
			cp = &inode{data: recoverContents(ino, c), perm: ino.perm}
			cp.synced = slices.Clone(cp.data)
			copies[ino] = cp
		}
		out.live[n] = cp
		out.durable[n] = cp
	}
	return out
}

func applyDirOp(names map[string]*inode, op dirOp) {
	switch op.kind {
	case "create":
		names[op.name] = op.ino
	case "rename":
		if ino, ok := names[op.name]; ok {
			delete(names, op.name)
			names[op.new] = ino
		} else {
			// The source's creation did not survive: the rename
			// still moves the inode it named when it ran.
			names[op.new] = op.ino
		}
	case "remove":
		delete(names, op.name)
	}
}

func recoverContents(ino *inode, c Crash) []byte {
	data := slices.Clone(ino.synced)
	k := len(ino.pending)
	if c.FileOps >= 0 && c.FileOps < k {
		k = c.FileOps
	}
	lastWrite := -1
	for i := k - 1; i >= 0; i-- {
		if !ino.pending[i].truncate {
			lastWrite = i
			break
		}
	}
	for i, op := range ino.pending[:k] {
		if op.truncate {
			data = resize(data, op.off)
			continue
		}
		w := op.data
		if i == lastWrite && c.Tear != nil {
			w = c.Tear(slices.Clone(w))
		}
		data = writeAt(data, op.off, w)
	}
	return data
}

// TearPrefix returns a Crash.Tear function under which only the first n
// bytes of the write reach the disk.
func TearPrefix(n int) func([]byte) []byte {
	return func(b []byte) []byte {
		if n < len(b) {
			return b[:n]
		}
		return b
	}
}

// TearSectors returns a Crash.Tear function under which the write keeps its
// full length but every [SectorSize]-byte sector i for which lost(i) is true
// holds zeros, as when a disk persists a write's sectors out of order.
func TearSectors(lost func(i int) bool) func([]byte) []byte {
	return func(b []byte) []byte {
		for i := 0; i*SectorSize < len(b); i++ {
			if lost(i) {
				end := min((i+1)*SectorSize, len(b))
				clear(b[i*SectorSize : end])
			}
		}
		return b
	}
}

func resize(b []byte, n int64) []byte {
	if int64(len(b)) >= n {
		return b[:n]
	}
	return append(b, make([]byte, int(n)-len(b))...)
}

func writeAt(b []byte, off int64, p []byte) []byte {
	if end := off + int64(len(p)); end > int64(len(b)) {
		b = resize(b, end)
	}
	copy(b[off:], p)
	return b
}

// ReadFile returns the contents of name as the running program sees them.
// It is not an operation and works after a crash.
func (s *FS) ReadFile(name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ino, ok := s.live[filepath.Clean(name)]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return slices.Clone(ino.data), nil
}

// WriteFile replaces the contents of name (creating it with perm) and makes
// the result durable at once, for setting up a test. It is not counted as an
// operation.
func (s *FS) WriteFile(name string, data []byte, perm os.FileMode) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name = filepath.Clean(name)
	ino := &inode{data: slices.Clone(data), synced: slices.Clone(data), perm: perm}
	s.live[name] = ino
	s.durable[name] = ino
}

// Names returns the names present in the running program's view, sorted.
func (s *FS) Names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range s.live {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// OpenFile implements [fsx.FS]. It honours O_RDONLY, O_WRONLY, O_RDWR,
// O_CREATE, O_EXCL, O_TRUNC and O_APPEND.
func (s *FS) OpenFile(name string, flag int, perm os.FileMode) (fsx.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name = filepath.Clean(name)
	if s.crashed {
		return nil, &fs.PathError{Op: "open", Path: name, Err: ErrCrashed}
	}
	ino, exists := s.live[name]
	switch {
	case exists && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrExist}
	case !exists && flag&os.O_CREATE == 0:
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	case !exists:
		if err := s.step("create %s", name); err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		ino = &inode{perm: perm & os.ModePerm}
		s.live[name] = ino
		dir := filepath.Dir(name)
		s.pending[dir] = append(s.pending[dir], dirOp{kind: "create", name: name, ino: ino})
	}
	writable := flag&(os.O_WRONLY|os.O_RDWR) != 0
	if flag&os.O_TRUNC != 0 && writable && exists && len(ino.data) > 0 {
		if err := s.step("truncate %s 0 (open)", name); err != nil {
			return nil, &fs.PathError{Op: "open", Path: name, Err: err}
		}
		ino.data = ino.data[:0]
		ino.pending = append(ino.pending, fileOp{truncate: true, off: 0})
	}
	return &file{fs: s, ino: ino, name: name, flag: flag}, nil
}

// Rename implements [fsx.FS]. Both names must be in the same directory.
func (s *FS) Rename(oldpath, newpath string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	oldpath, newpath = filepath.Clean(oldpath), filepath.Clean(newpath)
	if filepath.Dir(oldpath) != filepath.Dir(newpath) {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: errors.New("fsxtest: rename across directories is not modelled")}
	}
	ino, ok := s.live[oldpath]
	if !ok && !s.crashed {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrNotExist}
	}
	if err := s.step("rename %s %s", oldpath, newpath); err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	delete(s.live, oldpath)
	s.live[newpath] = ino
	dir := filepath.Dir(oldpath)
	s.pending[dir] = append(s.pending[dir], dirOp{kind: "rename", name: oldpath, new: newpath, ino: ino})
	return nil
}

// Remove implements [fsx.FS].
func (s *FS) Remove(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	name = filepath.Clean(name)
	if _, ok := s.live[name]; !ok && !s.crashed {
		return &fs.PathError{Op: "remove", Path: name, Err: fs.ErrNotExist}
	}
	if err := s.step("remove %s", name); err != nil {
		return &fs.PathError{Op: "remove", Path: name, Err: err}
	}
	delete(s.live, name)
	dir := filepath.Dir(name)
	s.pending[dir] = append(s.pending[dir], dirOp{kind: "remove", name: name})
	return nil
}

// Stat implements [fsx.FS].
func (s *FS) Stat(name string) (os.FileInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name = filepath.Clean(name)
	if s.crashed {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: ErrCrashed}
	}
	ino, ok := s.live[name]
	if !ok {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrNotExist}
	}
	return fileInfo{name: filepath.Base(name), size: int64(len(ino.data)), perm: ino.perm, ino: ino}, nil
}

// Resolve implements [fsx.FS]. There are no links or permissions to check:
// it returns the cleaned path.
func (s *FS) Resolve(name string) (string, error) {
	if name == "" {
		return "", errors.New("fsxtest: resolve: empty path")
	}
	return filepath.Clean(name), nil
}

// SyncDir implements [fsx.FS]: the directory's pending name changes become
// durable.
func (s *FS) SyncDir(dir string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	dir = filepath.Clean(dir)
	if err := s.step("syncdir %s", dir); err != nil {
		return &fs.PathError{Op: "sync", Path: dir, Err: err}
	}
	for _, op := range s.pending[dir] {
		applyDirOp(s.durable, op)
	}
	delete(s.pending, dir)
	return nil
}

// Lock implements [fsx.FS]. Locks are held in memory by this FS value.
func (s *FS) Lock(name string) (io.Closer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	name = filepath.Clean(name)
	if s.crashed {
		return nil, &fs.PathError{Op: "lock", Path: name, Err: ErrCrashed}
	}
	if s.locks[name] {
		return nil, fmt.Errorf("lock %s: %w", name, fsx.ErrLocked)
	}
	s.locks[name] = true
	return &lock{fs: s, name: name}, nil
}

type lock struct {
	fs   *FS
	name string
	once sync.Once
}

func (l *lock) Close() error {
	l.once.Do(func() {
		l.fs.mu.Lock()
		delete(l.fs.locks, l.name)
		l.fs.mu.Unlock()
	})
	return nil
}

type file struct {
	fs     *FS
	ino    *inode
	name   string
	flag   int
	pos    int64
	closed bool
}

func (f *file) check(op string, write bool) error {
	if f.closed {
		return &fs.PathError{Op: op, Path: f.name, Err: fs.ErrClosed}
	}
	if f.fs.crashed {
		return &fs.PathError{Op: op, Path: f.name, Err: ErrCrashed}
	}
	writable := f.flag&(os.O_WRONLY|os.O_RDWR) != 0
	readable := f.flag&os.O_WRONLY == 0
	if write && !writable || !write && !readable {
		return &fs.PathError{Op: op, Path: f.name, Err: fs.ErrPermission}
	}
	return nil
}

func (f *file) Read(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("read", false); err != nil {
		return 0, err
	}
	if f.pos >= int64(len(f.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.ino.data[f.pos:])
	f.pos += int64(n)
	return n, nil
}

func (f *file) ReadAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("read", false); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &fs.PathError{Op: "read", Path: f.name, Err: fs.ErrInvalid}
	}
	if off >= int64(len(f.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.ino.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *file) Write(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("write", true); err != nil {
		return 0, err
	}
	if err := f.fs.step("write %s @%d +%d", f.name, f.pos, len(p)); err != nil {
		return 0, &fs.PathError{Op: "write", Path: f.name, Err: err}
	}
	if f.flag&os.O_APPEND != 0 {
		f.pos = int64(len(f.ino.data))
	}
	f.ino.data = writeAt(f.ino.data, f.pos, p)
	f.ino.pending = append(f.ino.pending, fileOp{off: f.pos, data: slices.Clone(p)})
	f.pos += int64(len(p))
	return len(p), nil
}

func (f *file) WriteAt(p []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("write", true); err != nil {
		return 0, err
	}
	if off < 0 || f.flag&os.O_APPEND != 0 {
		return 0, &fs.PathError{Op: "writeat", Path: f.name, Err: fs.ErrInvalid}
	}
	if err := f.fs.step("write %s @%d +%d", f.name, off, len(p)); err != nil {
		return 0, &fs.PathError{Op: "write", Path: f.name, Err: err}
	}
	f.ino.data = writeAt(f.ino.data, off, p)
	f.ino.pending = append(f.ino.pending, fileOp{off: off, data: slices.Clone(p)})
	return len(p), nil
}

func (f *file) Seek(offset int64, whence int) (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return 0, &fs.PathError{Op: "seek", Path: f.name, Err: fs.ErrClosed}
	}
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = f.pos + offset
	case io.SeekEnd:
		abs = int64(len(f.ino.data)) + offset
	default:
		return 0, &fs.PathError{Op: "seek", Path: f.name, Err: fs.ErrInvalid}
	}
	if abs < 0 {
		return 0, &fs.PathError{Op: "seek", Path: f.name, Err: fs.ErrInvalid}
	}
	f.pos = abs
	return abs, nil
}

func (f *file) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return &fs.PathError{Op: "sync", Path: f.name, Err: fs.ErrClosed}
	}
	if err := f.fs.step("sync %s", f.name); err != nil {
		return &fs.PathError{Op: "sync", Path: f.name, Err: err}
	}
	f.ino.synced = slices.Clone(f.ino.data)
	f.ino.pending = nil
	return nil
}

func (f *file) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.check("truncate", true); err != nil {
		return err
	}
	if size < 0 {
		return &fs.PathError{Op: "truncate", Path: f.name, Err: fs.ErrInvalid}
	}
	if err := f.fs.step("truncate %s %d", f.name, size); err != nil {
		return &fs.PathError{Op: "truncate", Path: f.name, Err: err}
	}
	f.ino.data = resize(f.ino.data, size)
	f.ino.pending = append(f.ino.pending, fileOp{truncate: true, off: size})
	return nil
}

func (f *file) Stat() (os.FileInfo, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return nil, &fs.PathError{Op: "stat", Path: f.name, Err: fs.ErrClosed}
	}
	return fileInfo{name: filepath.Base(f.name), size: int64(len(f.ino.data)), perm: f.ino.perm, ino: f.ino}, nil
}

// TryLock implements [fsx.File]: the lock is on the file, whatever name it
// was opened by, and held in memory by the FS value until f is closed.
func (f *file) TryLock() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return &fs.PathError{Op: "lock", Path: f.name, Err: fs.ErrClosed}
	}
	if f.fs.crashed {
		return &fs.PathError{Op: "lock", Path: f.name, Err: ErrCrashed}
	}
	if h, ok := f.fs.ilocks[f.ino]; ok && h != f {
		return fmt.Errorf("lock %s: %w", f.name, fsx.ErrLocked)
	}
	f.fs.ilocks[f.ino] = f
	return nil
}

func (f *file) Close() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return &fs.PathError{Op: "close", Path: f.name, Err: fs.ErrClosed}
	}
	f.closed = true
	if f.fs.ilocks[f.ino] == f {
		delete(f.fs.ilocks, f.ino)
	}
	return nil
}

type fileInfo struct {
	name string
	size int64
	perm os.FileMode
	ino  *inode
}

// SameFile lets [fsx.SameFile] tell whether two FileInfos describe one file.
func (fi fileInfo) SameFile(other os.FileInfo) bool {
	o, ok := other.(fileInfo)
	return ok && fi.ino == o.ino
}

func (fi fileInfo) Name() string       { return fi.name }
func (fi fileInfo) Size() int64        { return fi.size }
func (fi fileInfo) Mode() os.FileMode  { return fi.perm }
func (fi fileInfo) ModTime() time.Time { return time.Time{} }
func (fi fileInfo) IsDir() bool        { return false }
func (fi fileInfo) Sys() any           { return nil }
