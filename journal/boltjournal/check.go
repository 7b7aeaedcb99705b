package boltjournal

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"strconv"

	berrors "go.etcd.io/bbolt/errors"
)

// The journal reads a database file itself, with plain reads, before it
// lets bbolt map it. bbolt trusts the pages it maps: a page number past the
// end of the file, or a key whose offset points outside its page, makes it
// read memory that is not there, and the process dies of the fault (a
// panic could be recovered, a fault cannot, and bbolt's own check runs on a
// goroutine of its own). A file that passes this check holds only pages
// bbolt can read safely, so a damaged or foreign file is refused before
// bbolt sees it, and is never written to.
//
// The layout below is bbolt's file format version 2, in the byte order of
// the machine (bbolt writes its structures as they lie in memory, so a
// database moves only between machines of the same byte order):
//
//	page    id u64, flags u16, count u16, overflow u32, then the body;
//	        a page with overflow n spans n+1 pages of the file
//	meta    (pages 0 and 1) magic u32, version u32, page size u32,
//	        flags u32, root bucket (root page u64, sequence u64),
//	        freelist page u64, high-water page u64, txid u64, and the
//	        FNV-1a 64 checksum of the fields before it
//	branch  count elements of pos u32, ksize u32, child page u64; the key
//	        lies pos bytes after its element
//	leaf    count elements of flags u32, pos u32, ksize u32, vsize u32; the
//	        key lies pos bytes after its element, the value right after it;
//	        flag 1 marks a nested bucket, whose value is a bucket header
//	        (root page u64, sequence u64), followed, when the root page is
//	        0, by the bucket's only page, a leaf (an inline bucket)
//	freelist count page ids u64; a count of 0xFFFF means the real count
//	        is the first u64
const (
	pageHeaderSize   = 16
	elementSize      = 16 // branch and leaf elements alike
	metaSize         = 64
	metaSumOffset    = 56 // the checksum covers the meta's bytes before it
	bucketHeaderSize = 16

	boltMagic   = 0xED0CDAED
	boltVersion = 2

	branchPageFlag   = 0x01
	leafPageFlag     = 0x02
	metaPageFlag     = 0x04
	freelistPageFlag = 0x10
	bucketLeafFlag   = 0x01

	noFreelist = ^uint64(0)

	// bbolt uses the page size of the machine that created the database;
	// these bound what any machine uses.
	minPageSize = 1 << 10
	maxPageSize = 1 << 16

	// maxPageSpan bounds one page with its overflow. The largest journal
	// page holds one op of at most journal.MaxEntrySize bytes.
	maxPageSpan = 8 << 20

	// maxDepth bounds the nesting of pages and buckets. A B+tree whose
	// branches have at least two children is far shallower in any file.
	maxDepth = 64
)

var ne = binary.NativeEndian

// damage is what is wrong with a database file, found by checkFile. It
// unwraps to the bbolt error that says the same, when there is one.
type damage struct {
	off   int64 // byte offset of the damaged page, or -1
	msg   string
	cause error
	io    bool // the file could not be read: an I/O error, not damage
}

func (d *damage) Error() string { return d.msg }

// err returns d as an error: an error reading the file is not damage.
func (d *damage) err() error {
	if d.io {
		return d.cause
	}
	return d
}
func (d *damage) Unwrap() error { return d.cause }

func damagef(off int64, format string, args ...any) *damage {
	return &damage{off: off, msg: fmt.Sprintf(format, args...)}
}

// boltMeta is one meta page, decoded.
type boltMeta struct {
	pageSize uint32
	root     uint64 // root bucket's root page
	freelist uint64
	hwm      uint64 // pages below it are in use or free; none at or above
	txid     uint64
}

// parseMeta decodes the meta page whose first bytes are b, as bbolt
// validates it: magic, version, checksum.
func parseMeta(b []byte, off int64) (boltMeta, *damage) {
	if len(b) < pageHeaderSize+metaSize {
		return boltMeta{}, &damage{off: off, msg: "meta page cut short", cause: berrors.ErrInvalid}
	}
	m := b[pageHeaderSize : pageHeaderSize+metaSize]
	if magic := ne.Uint32(m); magic != boltMagic {
		return boltMeta{}, &damage{off: off, msg: fmt.Sprintf("no bbolt magic number (found %#x): not a bbolt database", magic), cause: berrors.ErrInvalid}
	}
	if v := ne.Uint32(m[4:]); v != boltVersion {
		return boltMeta{}, &damage{off: off, msg: fmt.Sprintf("bbolt file format version %d, not %d", v, boltVersion), cause: berrors.ErrVersionMismatch}
	}
	h := fnv.New64a()
	h.Write(m[:metaSumOffset])
	if sum := ne.Uint64(m[metaSumOffset:]); sum != h.Sum64() {
		return boltMeta{}, &damage{off: off, msg: "meta page checksum mismatch", cause: berrors.ErrChecksum}
	}
	return boltMeta{
		pageSize: ne.Uint32(m[8:]),
		root:     ne.Uint64(m[16:]),
		freelist: ne.Uint64(m[32:]),
		hwm:      ne.Uint64(m[40:]),
		txid:     ne.Uint64(m[48:]),
	}, nil
}

// readMeta picks the meta page bbolt would use: the valid one with the
// higher transaction ID (a crash while bbolt wrote the other leaves it
// torn). Like bbolt, it takes the page size from meta page 0, or when that
// is torn, from a valid meta page 1 found at one of the page sizes bbolt
// could have used.
func readMeta(r io.ReaderAt, size int64) (boltMeta, *damage) {
	if size == 0 {
		return boltMeta{}, damagef(-1, "the file is empty; the journal never leaves an empty database (it builds one under another name and renames it into place), so its contents were lost")
	}
	buf := make([]byte, pageHeaderSize+metaSize)
	var badHeader []*damage
	read := func(off int64) (boltMeta, *damage) {
		if off+int64(len(buf)) > size {
			return boltMeta{}, &damage{off: off, msg: fmt.Sprintf("file of %d bytes is too small for a bbolt database", size), cause: berrors.ErrInvalid}
		}
		if _, err := r.ReadAt(buf, off); err != nil {
			return boltMeta{}, &damage{off: off, msg: fmt.Sprintf("read meta page: %v", err), cause: err, io: true}
		}
		m, d := parseMeta(buf, off)
		// bbolt writes a meta page whole, header first, so a wrong
		// page header is damage even on a torn meta page; bbolt's own
		// check asserts on it later.
		want := uint64(0)
		if off > 0 {
			want = 1
		}
		if id, flags := ne.Uint64(buf), ne.Uint16(buf[8:]); (off == 0 || d == nil) && (id != want || flags != metaPageFlag) {
			badHeader = append(badHeader, damagef(off, "meta page %d has a page header for page %d with flags %#x", want, id, flags))
		}
		return m, d
	}
	m0, err0 := read(0)
	var psize int64
	if err0 == nil {
		psize = int64(m0.pageSize)
	} else {
		for s := int64(minPageSize); s <= maxPageSize; s <<= 1 {
			if m, err := read(s); err == nil && int64(m.pageSize) == s {
				psize = s
				break
			}
		}
		if psize == 0 {
			return boltMeta{}, err0
		}
	}
	if psize < minPageSize || psize > maxPageSize || psize&(psize-1) != 0 {
		return boltMeta{}, damagef(0, "page size %d is not a power of two from %d to %d", psize, minPageSize, maxPageSize)
	}
	if size < 2*psize {
		return boltMeta{}, &damage{off: 0, msg: fmt.Sprintf("file of %d bytes is too small for two meta pages of %d bytes", size, psize), cause: berrors.ErrInvalid}
	}
	m1, err1 := read(psize)
	var m boltMeta
	switch {
	case err0 == nil && err1 == nil:
		if m0.pageSize != m1.pageSize {
			return boltMeta{}, damagef(psize, "meta pages disagree on the page size (%d and %d)", m0.pageSize, m1.pageSize)
		}
		m = m0
		if m1.txid > m0.txid {
			m = m1
		}
	case err0 == nil:
		m = m0
	case err1 == nil:
		m = m1
	default:
		return boltMeta{}, err0
	}
	if len(badHeader) > 0 {
		return boltMeta{}, badHeader[0]
	}
	switch {
	case m.hwm < 4 || m.hwm > uint64(size/psize):
		return boltMeta{}, damagef(-1, "the database ends at page %d, but the file holds %d pages of %d bytes (cut short?)", m.hwm, size/psize, psize)
	case m.root < 2 || m.root >= m.hwm:
		return boltMeta{}, damagef(-1, "root page %d is outside pages 2 to %d", m.root, m.hwm-1)
	case m.freelist == noFreelist:
		// Such a database was written with bbolt's NoFreelistSync,
		// which the journal never uses; bbolt would write to it when
		// opening it.
		return boltMeta{}, damagef(-1, "the database keeps no freelist: not a guestward journal database")
	case m.freelist < 2 || m.freelist >= m.hwm:
		return boltMeta{}, damagef(-1, "freelist page %d is outside pages 2 to %d", m.freelist, m.hwm-1)
	}
	return m, nil
}

// Page states, in checker.state.
const (
	pageUnseen byte = iota
	pageFree
	pageUsed
)

// checker walks a database file's pages. In strict mode (checkFile) the
// first fault ends the walk; in salvage mode it notes what it had to skip
// and goes on with the rest.
type checker struct {
	r     io.ReaderAt
	m     boltMeta
	psize int64

	salvage bool
	lost    []string

	state []byte   // of every page below the high-water mark
	bufs  [][]byte // one per depth, so that a page's keys stay valid below it
	hdr   [pageHeaderSize]byte
}

// fault ends the walk with err, unless the checker salvages and err is
// damage, which it notes. Errors reading the file always end the walk.
func (c *checker) fault(err error) error {
	d, ok := err.(*damage)
	if !c.salvage || !ok {
		return err
	}
	c.lost = append(c.lost, d.msg+"; what lies below it is lost")
	return nil
}

// page reads page id, with its overflow, into the buffer for depth, and
// marks it used.
func (c *checker) page(id uint64, depth int) ([]byte, error) {
	off := int64(id) * c.psize
	if id < 2 || id >= c.m.hwm {
		return nil, damagef(-1, "page %d is outside pages 2 to %d", id, c.m.hwm-1)
	}
	if _, err := c.r.ReadAt(c.hdr[:], off); err != nil {
		return nil, fmt.Errorf("read page %d: %w", id, err)
	}
	if got := ne.Uint64(c.hdr[:]); got != id {
		return nil, damagef(off, "page %d calls itself page %d", id, got)
	}
	overflow := uint64(ne.Uint32(c.hdr[12:]))
	if id+overflow >= c.m.hwm {
		return nil, damagef(off, "page %d runs %d pages past the end of the database", id, id+overflow-c.m.hwm+1)
	}
	span := int64(overflow+1) * c.psize
	if span > maxPageSpan {
		return nil, damagef(off, "page %d spans %d bytes, more than any journal page", id, span)
	}
	for p := id; p <= id+overflow; p++ {
		switch c.state[p] {
		case pageFree:
			return nil, damagef(off, "page %d is in use and free at once", p)
		case pageUsed:
			return nil, damagef(off, "page %d is in use twice", p)
		}
		c.state[p] = pageUsed
	}
	for len(c.bufs) <= depth {
		c.bufs = append(c.bufs, nil)
	}
	if int64(cap(c.bufs[depth])) < span {
		c.bufs[depth] = make([]byte, span)
	}
	b := c.bufs[depth][:span]
	if _, err := c.r.ReadAt(b, off); err != nil {
		return nil, fmt.Errorf("read page %d: %w", id, err)
	}
	return b, nil
}

// freelist reads the freelist and marks its pages and the pages it lists.
func (c *checker) freelist() error {
	id := c.m.freelist
	b, err := c.page(id, 0)
	if err != nil {
		return err
	}
	off := int64(id) * c.psize
	if flags := ne.Uint16(b[8:]); flags != freelistPageFlag {
		return damagef(off, "freelist page %d has type %#x", id, flags)
	}
	body := b[pageHeaderSize:]
	n := uint64(ne.Uint16(b[10:]))
	if n == 0xFFFF {
		if len(body) < 8 {
			return damagef(off, "freelist page %d cut short", id)
		}
		n, body = ne.Uint64(body), body[8:]
	}
	if n > uint64(len(body)/8) {
		return damagef(off, "freelist page %d lists %d pages, more than it holds", id, n)
	}
	for i := range n {
		p := ne.Uint64(body[i*8:])
		switch {
		case p < 2 || p >= c.m.hwm:
			return damagef(off, "freelist page %d lists page %d, outside pages 2 to %d", id, p, c.m.hwm-1)
		case c.state[p] != pageUnseen:
			return damagef(off, "freelist page %d lists page %d twice, or a page in use", id, p)
		}
		c.state[p] = pageFree
	}
	return nil
}

// leafFunc is called with every entry of a bucket's leaves, in key order.
// k and v are valid only during the call.
type leafFunc func(k, v []byte, bucket bool) error

// tree walks the B+tree of one bucket: from page root, or when root is 0
// the inline page in inline. Every key must lie in [lo, hi) (nil: open).
func (c *checker) tree(root uint64, inline []byte, depth int, lo, hi []byte, fn leafFunc) error {
	if depth > maxDepth {
		return c.fault(damagef(int64(root)*c.psize, "pages nest more than %d deep", maxDepth))
	}
	b, off := inline, int64(-1)
	if root != 0 {
		var err error
		if b, err = c.page(root, depth); err != nil {
			return c.fault(err)
		}
		off = int64(root) * c.psize
	} else if len(b) < pageHeaderSize {
		return c.fault(damagef(-1, "inline bucket page cut short"))
	}
	what := "inline bucket page"
	if root != 0 {
		what = "page " + strconv.FormatUint(root, 10)
	}
	flags, n := ne.Uint16(b[8:]), int(ne.Uint16(b[10:]))
	if pageHeaderSize+n*elementSize > len(b) {
		return c.fault(damagef(off, "%s has %d elements, more than fit in it", what, n))
	}
	// elem returns element i's key and value (nil for a branch).
	elem := func(i int, branch bool) (k, v []byte, d *damage) {
		at := pageHeaderSize + i*elementSize
		e := b[at : at+elementSize]
		var pos, ksize, vsize uint64
		if branch {
			pos, ksize = uint64(ne.Uint32(e)), uint64(ne.Uint32(e[4:]))
		} else {
			pos, ksize, vsize = uint64(ne.Uint32(e[4:])), uint64(ne.Uint32(e[8:])), uint64(ne.Uint32(e[12:]))
		}
		start := uint64(at) + pos
		if ksize == 0 {
			return nil, nil, damagef(off, "%s: element %d has an empty key", what, i)
		}
		if start+ksize+vsize > uint64(len(b)) {
			return nil, nil, damagef(off, "%s: element %d points past the end of its page", what, i)
		}
		k = b[start : start+ksize]
		if !branch {
			v = b[start+ksize : start+ksize+vsize]
		}
		if lo != nil && bytes.Compare(k, lo) < 0 || hi != nil && bytes.Compare(k, hi) >= 0 {
			return nil, nil, damagef(off, "%s: key %d is out of order with the branch above it", what, i)
		}
		return k, v, nil
	}
	var prev []byte
	switch {
	case flags == branchPageFlag && root != 0:
		if n == 0 {
			return c.fault(damagef(off, "%s is a branch without children", what))
		}
		for i := range n {
			k, _, d := elem(i, true)
			if d == nil && prev != nil && bytes.Compare(prev, k) >= 0 {
				d = damagef(off, "%s: key %d is out of order", what, i)
			}
			if d != nil {
				return c.fault(d)
			}
			prev = k
			next := hi
			if i+1 < n {
				if next, _, d = elem(i+1, true); d != nil {
					return c.fault(d)
				}
			}
			at := pageHeaderSize + i*elementSize
			child := ne.Uint64(b[at+8:])
			if child == 0 {
				return c.fault(damagef(off, "%s: element %d points to page 0", what, i))
			}
			if err := c.tree(child, nil, depth+1, k, next, fn); err != nil {
				return err
			}
		}
	case flags == leafPageFlag:
		for i := range n {
			k, v, d := elem(i, false)
			if d == nil && prev != nil && bytes.Compare(prev, k) >= 0 {
				d = damagef(off, "%s: key %d is out of order", what, i)
			}
			if d != nil {
				return c.fault(d)
			}
			prev = k
			at := pageHeaderSize + i*elementSize
			ef := ne.Uint32(b[at:])
			if ef&^bucketLeafFlag != 0 {
				return c.fault(damagef(off, "%s: element %d has unknown flags %#x", what, i, ef))
			}
			if err := fn(k, v, ef&bucketLeafFlag != 0); err != nil {
				return err
			}
		}
	default:
		return c.fault(damagef(off, "%s has type %#x where a branch or leaf belongs", what, flags))
	}
	return nil
}

// bucket walks the nested bucket whose header is v.
func (c *checker) bucket(name, v []byte, depth int, fn leafFunc) error {
	if len(v) < bucketHeaderSize {
		return c.fault(damagef(-1, "bucket %q has a header of %d bytes", name, len(v)))
	}
	root := ne.Uint64(v)
	if root == 0 {
		return c.tree(0, v[bucketHeaderSize:], depth, nil, nil, fn)
	}
	if len(v) != bucketHeaderSize {
		return c.fault(damagef(-1, "bucket %q has both a root page and an inline page", name))
	}
	return c.tree(root, nil, depth, nil, nil, fn)
}

// walkJournal walks the journal's buckets, calling op with every entry of
// the ops bucket, and returns the ops bucket's sequence. Anything but
// exactly the journal's buckets makes the file a foreign database.
func (c *checker) walkJournal(op func(k, v []byte) error) (opsSeq uint64, err error) {
	var sawMeta, sawOps bool
	var format []byte
	err = c.tree(c.m.root, nil, 0, nil, nil, func(k, v []byte, isBucket bool) error {
		switch {
		case !isBucket && c.salvage:
			c.lost = append(c.lost, fmt.Sprintf("key %q outside any bucket", k))
			return nil
		case !isBucket:
			return damagef(-1, "key %q outside any bucket: not a guestward journal database", k)
		case bytes.Equal(k, bucketMeta):
			sawMeta = true
			return c.bucket(k, v, 1, func(k, v []byte, isBucket bool) error {
				if isBucket {
					return damagef(-1, "bucket %q inside the meta bucket: not a guestward journal database", k)
				}
				if bytes.Equal(k, keyFormat) {
					format = bytes.Clone(v)
				}
				return nil
			})
		case bytes.Equal(k, bucketOps):
			// Salvage takes the ops of a journal whose meta bucket
			// is damaged.
			switch {
			case c.salvage:
			case !sawMeta:
				return damagef(-1, "no %q bucket: not a guestward journal database", bucketMeta)
			case !bytes.Equal(format, formatValue):
				return damagef(-1, "format %q is not %q: not a guestward journal database, or a version this one cannot read", format, formatValue)
			}
			sawOps = true
			if len(v) >= bucketHeaderSize {
				opsSeq = ne.Uint64(v[8:])
			}
			return c.bucket(k, v, 1, func(k, v []byte, isBucket bool) error {
				if isBucket {
					if c.salvage {
						c.lost = append(c.lost, fmt.Sprintf("bucket %q inside the ops bucket", k))
						return nil
					}
					return damagef(-1, "bucket %q inside the ops bucket: not a guestward journal database", k)
				}
				return op(k, v)
			})
		case c.salvage:
			c.lost = append(c.lost, fmt.Sprintf("bucket %q, which is not the journal's", k))
			return nil
		default:
			return damagef(-1, "bucket %q: not a guestward journal database", k)
		}
	})
	if err == nil && !sawOps {
		err = damagef(-1, "no %q bucket: not a guestward journal database", bucketOps)
	}
	return opsSeq, err
}

// checkFile checks the bbolt database in r, of size bytes, as the journal
// needs it before it lets bbolt map the file: the meta page bbolt would
// use; that every page below the high-water mark is in the file and is
// either free (listed once in the freelist) or in use (reached once from
// the root); that every page reached is a branch or leaf whose elements
// lie inside it, in key order; and that the file holds the journal's
// buckets and nothing else. It calls op with every key and value of the ops
// bucket, valid only during the call, and returns the ops bucket's
// sequence.
//
// What it finds wrong is a *damage. Errors from op are returned as they
// are; errors reading r are wrapped in a *damage.
func checkFile(r io.ReaderAt, size int64, op func(k, v []byte) error) (opsSeq uint64, err error) {
	m, d := readMeta(r, size)
	if d != nil {
		return 0, d.err()
	}
	c := &checker{r: r, m: m, psize: int64(m.pageSize), state: make([]byte, m.hwm)}
	c.state[0], c.state[1] = pageUsed, pageUsed
	if err := c.freelist(); err != nil {
		return 0, err
	}
	if opsSeq, err = c.walkJournal(op); err != nil {
		return 0, err
	}
	for p, s := range c.state {
		if s == pageUnseen {
			return 0, damagef(int64(p)*c.psize, "page %d is neither in use nor free", p)
		}
	}
	return opsSeq, nil
}

// salvageFile reads what it can of the ops bucket of a damaged database,
// calling op with every entry it reaches, and lists what it had to skip.
// It fails when no meta page is valid or it finds no ops bucket, which
// leave nothing to start from.
func salvageFile(r io.ReaderAt, size int64, op func(k, v []byte) error) (lost []string, err error) {
	m, d := readMeta(r, size)
	if d != nil {
		return nil, d.err()
	}
	c := &checker{r: r, m: m, psize: int64(m.pageSize), state: make([]byte, m.hwm), salvage: true}
	c.state[0], c.state[1] = pageUsed, pageUsed
	_, err = c.walkJournal(op)
	return c.lost, err
}
