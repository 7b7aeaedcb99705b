package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// The file format.
//
// A journal file starts with a 16-byte header:
//
//	[8]byte  magic "GWJOURNL"
//	uint32   format version (1), little-endian
//	uint32   CRC-32C of the 12 bytes before it
//
// and continues with records, each a 16-byte frame header and a payload:
//
//	uint32   payload length n, little-endian
//	uint32   CRC-32C (Castagnoli) over the length field, the batch field
//	         and the payload
//	uint64   batch: the file offset at which the write that carried this
//	         record began
//	[n]byte  payload: one kind byte (1 record, 2 snapshot) then the entry
//	         encoded as by Entry.MarshalBinary
//
// Appends are written in batches, one write per batch, and a batch is synced
// before the next one is written. So only the last batch can be torn by a
// crash, and the batch field tells recovery which records shared a write: on
// the first damaged record at offset X, the damage is a torn tail when no
// intact record from a later batch (batch field > X) follows it anywhere in
// the file. Then the file is cut at X. Otherwise acknowledged data is damaged
// and opening fails with ErrCorrupt; nothing is skipped.
//
// The writer extends the file with zeros ahead of its writes and then
// overwrites them in place (see FileJournal.writeBatch): on most file
// systems a sync after such an overwrite flushes the data alone, while one
// after an append must also commit the new size and block allocation. So a
// journal file usually ends in zeros; when every byte from X to the end of
// the file is zero, the log simply ends at X.
const (
	fileMagic       = "GWJOURNL"
	fileVersion     = 1
	fileHeaderSize  = 16
	frameHeaderSize = 16

	kindRecord   byte = 1
	kindSnapshot byte = 2

	// The smallest payload: kind, version, state, flags, VMID, a one-byte
	// op ID, four empty strings, no params.
	minPayload = 1 + 3 + 1 + 2 + 4 + 1
	maxPayload = 1 + MaxEntrySize
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func appendFileHeader(b []byte) []byte {
	b = append(b, fileMagic...)
	b = binary.LittleEndian.AppendUint32(b, fileVersion)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[len(b)-12:], castagnoli))
}

func checkFileHeader(h []byte) error {
	if len(h) < fileHeaderSize {
		return fmt.Errorf("file of %d bytes is shorter than a journal header", len(h))
	}
	if string(h[:8]) != fileMagic {
		return errors.New("no journal header: not a guestward journal file, or its header is damaged")
	}
	if crc32.Checksum(h[:12], castagnoli) != binary.LittleEndian.Uint32(h[12:16]) {
		return errors.New("journal header checksum mismatch")
	}
	if v := binary.LittleEndian.Uint32(h[8:12]); v != fileVersion {
		return fmt.Errorf("journal format version %d is not supported (want %d)", v, fileVersion)
	}
	return nil
}

// appendFrame appends a record frame for a validated entry. The checksum and
// batch fields stay zero until sealFrames, which runs when the writer knows
// where the batch will land.
func appendFrame(b []byte, kind byte, e *Entry) []byte {
	start := len(b)
	b = append(b, make([]byte, frameHeaderSize)...)
	b = append(b, kind)
	b = e.appendEncoding(b)
	binary.LittleEndian.PutUint32(b[start:], uint32(len(b)-start-frameHeaderSize))
	return b
}

// appendFrameRaw is appendFrame for an entry whose Params are given encoded.
func appendFrameRaw(b []byte, kind byte, e *Entry, params string) []byte {
	start := len(b)
	b = append(b, make([]byte, frameHeaderSize)...)
	b = append(b, kind)
	b = e.appendEncodingRaw(b, params)
	binary.LittleEndian.PutUint32(b[start:], uint32(len(b)-start-frameHeaderSize))
	return b
}

// sealFrames fills in the batch and checksum fields of the frames in buf,
// which is about to be written at file offset at.
func sealFrames(buf []byte, at int64) {
	for p := 0; p < len(buf); {
		n := int(binary.LittleEndian.Uint32(buf[p:]))
		binary.LittleEndian.PutUint64(buf[p+8:], uint64(at))
		end := p + frameHeaderSize + n
		crc := crc32.Update(0, castagnoli, buf[p:p+4])
		crc = crc32.Update(crc, castagnoli, buf[p+8:end])
		binary.LittleEndian.PutUint32(buf[p+4:], crc)
		p = end
	}
}

// frameError says why the bytes at an offset are not an intact record.
type frameError struct{ reason string }

func (e *frameError) Error() string { return e.reason }

// parseFrame checks the frame at file offset off, whose bytes start b. It
// returns the frame's total length, or a *frameError. b may be longer than
// the frame; when it is shorter, avail reports how many bytes the file holds
// from off, so a frame running past the end of the file is told apart from
// one that merely needs more buffer (need > 0).
func parseFrame(b []byte, off, avail int64) (total int, need int, err error) {
	if avail < frameHeaderSize {
		return 0, 0, &frameError{fmt.Sprintf("%d bytes left, fewer than a record header", avail)}
	}
	if len(b) < frameHeaderSize {
		return 0, frameHeaderSize, nil
	}
	n := int(binary.LittleEndian.Uint32(b))
	if n < minPayload || n > maxPayload {
		return 0, 0, &frameError{fmt.Sprintf("record length %d out of range", n)}
	}
	total = frameHeaderSize + n
	if int64(total) > avail {
		return 0, 0, &frameError{fmt.Sprintf("record of %d bytes runs past the end of the file", total)}
	}
	if len(b) < total {
		return 0, total, nil
	}
	batch := binary.LittleEndian.Uint64(b[8:])
	if batch < fileHeaderSize || batch > uint64(off) {
		return 0, 0, &frameError{fmt.Sprintf("batch offset %d impossible at offset %d", batch, off)}
	}
	crc := crc32.Update(0, castagnoli, b[:4])
	crc = crc32.Update(crc, castagnoli, b[8:total])
	if crc != binary.LittleEndian.Uint32(b[4:]) {
		return 0, 0, &frameError{"checksum mismatch"}
	}
	if k := b[frameHeaderSize]; k != kindRecord && k != kindSnapshot {
		return 0, 0, &frameError{fmt.Sprintf("unknown record kind %d", k)}
	}
	return total, 0, nil
}

func frameBatch(b []byte) int64 { return int64(binary.LittleEndian.Uint64(b[8:])) }

// window is a read buffer over a file that is scanned mostly forwards.
type window struct {
	r    io.ReaderAt
	size int64
	buf  []byte
	off  int64 // file offset of buf[0]
}

const windowSize = 1 << 20

// at returns at least n bytes of the file from off (fewer only at the end of
// the file), reading when the buffer does not hold them.
func (w *window) at(off int64, n int) ([]byte, error) {
	if off >= w.off && off+int64(n) <= w.off+int64(len(w.buf)) {
		return w.buf[off-w.off:], nil
	}
	want := max(n, windowSize)
	if rest := w.size - off; int64(want) > rest {
		want = int(rest)
	}
	if cap(w.buf) < want {
		w.buf = make([]byte, want)
	}
	w.buf = w.buf[:want]
	m, err := w.r.ReadAt(w.buf, off)
	if m < want {
		w.buf = w.buf[:0]
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("read at offset %d: %w", off, err)
	}
	w.off = off
	return w.buf, nil
}

// scanResult is the outcome of scanning a journal file.
type scanResult struct {
	end     int64 // just past the last intact record: where appends go
	records int
	// torn is the reason the bytes from end to the end of the file were
	// judged a torn final write; "" when there are none or they are all
	// zero (space the writer preallocated).
	torn string
}

// visitFunc receives each intact record in file order; r is only valid
// during the call. An error from it means the record breaks the journal's
// rules: scanning stops and reports the record as corrupt.
type visitFunc func(r *scanRec) error

// scanLog reads the records of a journal file of size bytes whose header has
// been checked, calling visit for each. Damage in a torn final write is
// reported in the result; any other damage is a *CorruptError (with Path
// unset).
//
// Reading, checking and decoding run on a goroutine of their own, ahead of
// visit, which runs on the caller's: replaying a long journal is then bound
// by the slower of the two rather than their sum. stop, when not nil, is
// polled now and then; scanning ends with its error when it returns one.
func scanLog(stop func() error, r io.ReaderAt, size int64, visit visitFunc) (scanResult, error) {
	chunks := make(chan *scanChunk, 2)
	free := make(chan *scanChunk, 4)
	quit := make(chan struct{})
	go produceChunks(stop, r, size, chunks, free, quit)
	var res scanResult
	for c := range chunks {
		for i := range c.recs {
			rec := &c.recs[i]
			if rec.idTo > rec.idFrom {
				rec.id = c.ids[rec.idFrom:rec.idTo]
			}
			if err := visit(rec); err != nil {
				close(quit)
				for range chunks {
				}
				return res, &CorruptError{Offset: rec.off, Reason: "record breaks the journal's rules: " + err.Error()}
			}
			res.records++
		}
		if c.final {
			res.end, res.torn = c.end, c.torn
			err := c.err
			for range chunks {
			}
			return res, err
		}
		clear(c.recs)
		c.recs, c.ids = c.recs[:0], c.ids[:0]
		select {
		case free <- c:
		default:
		}
	}
	panic("journal: scan ended without a final chunk") // unreachable: the producer always sends one
}

// scanChunk carries decoded records from produceChunks to scanLog. The last
// chunk of a scan is final and says how the scan ended.
type scanChunk struct {
	recs  []scanRec
	ids   []byte // op IDs of the records that give theirs as bytes
	final bool
	end   int64  // final: just past the last intact record
	torn  string // final: why the rest of the file is a torn tail, or ""
	err   error  // final: damage (*CorruptError) or a read or stop error
}

// scanRec is one intact record, decoded.
type scanRec struct {
	off      int64
	snapshot bool
	e        Entry  // e.Params is nil: see params
	params   string // the record's Params, encoded (see encodeParams)
	// fresh is a new, zero opState for a record that begins an op (a
	// started or snapshot record), allocated by the reading goroutine
	// so that the replaying one does not have to.
	fresh *opState
	// id is the op ID of a record that continues an op, whose e.OpID is
	// empty: its later records need the ID only to find the op, which
	// already holds it as a string. It is only valid during visit.
	id           []byte
	idFrom, idTo int // id's place in the chunk's ids
}

const chunkRecords = 256

func produceChunks(stop func() error, r io.ReaderAt, size int64, out chan<- *scanChunk, free <-chan *scanChunk, quit <-chan struct{}) {
	defer close(out)
	w := &window{r: r, size: size}
	in := &interner{short: make(map[string]string)}
	var c *scanChunk
	newChunk := func() {
		select {
		case c = <-free:
		default:
			c = &scanChunk{recs: make([]scanRec, 0, chunkRecords)}
		}
	}
	send := func() bool {
		select {
		case out <- c:
			return true
		case <-quit:
			return false
		}
	}
	finish := func(end int64, torn string, err error) {
		c.final, c.end, c.torn, c.err = true, end, torn, err
		send()
	}
	newChunk()
	off := int64(fileHeaderSize)
	for n := 0; off < size; n++ {
		if n&1023 == 0 && stop != nil {
			if err := stop(); err != nil {
				finish(off, "", err)
				return
			}
		}
		b, err := w.at(off, frameHeaderSize)
		if err != nil {
			finish(off, "", err)
			return
		}
		total, need, ferr := parseFrame(b, off, size-off)
		if need > 0 {
			if b, err = w.at(off, need); err != nil {
				finish(off, "", err)
				return
			}
			total, _, ferr = parseFrame(b, off, size-off)
		}
		c.recs = append(c.recs, scanRec{off: off})
		rec := &c.recs[len(c.recs)-1]
		if ferr == nil {
			rec.snapshot = b[frameHeaderSize] == kindSnapshot
			var id []byte
			idp := &id
			if rec.snapshot {
				idp = nil
			}
			if derr := decodeEntryID(b[frameHeaderSize+1:total], &rec.e, in, &rec.params, idp); derr != nil {
				ferr = &frameError{"undecodable entry: " + derr.Error()}
			} else if rec.e.OpID != "" {
				rec.fresh = new(opState)
			} else {
				rec.idFrom = len(c.ids)
				c.ids = append(c.ids, id...)
				rec.idTo = len(c.ids)
			}
		}
		if ferr != nil {
			c.recs = c.recs[:len(c.recs)-1]
			zero, err := allZero(w, off)
			if err != nil {
				finish(off, "", err)
				return
			}
			if zero {
				finish(off, "", nil) // the log ends here, in preallocated space
				return
			}
			later, err := laterBatch(stop, w, off)
			switch {
			case err != nil:
				finish(off, "", err)
			case later >= 0:
				finish(off, "", &CorruptError{Offset: off, Reason: fmt.Sprintf("%s (an intact record written later follows at offset %d)", ferr, later)})
			default:
				finish(off, ferr.Error(), nil)
			}
			return
		}
		off += int64(total)
		if len(c.recs) == chunkRecords {
			if !send() {
				return
			}
			newChunk()
		}
	}
	finish(off, "", nil)
}

// allZero reports whether every byte of the file from off to its end is zero.
func allZero(w *window, off int64) (bool, error) {
	for off < w.size {
		n := int(min(w.size-off, windowSize))
		b, err := w.at(off, n)
		if err != nil {
			return false, err
		}
		for _, c := range b[:n] {
			if c != 0 {
				return false, nil
			}
		}
		off += int64(n)
	}
	return true, nil
}

// laterBatch looks, at every byte offset after the damaged record at x, for
// an intact record from a batch that began after x. It returns that record's
// offset, or -1 when there is none, which makes the damage a torn tail.
func laterBatch(stop func() error, w *window, x int64) (int64, error) {
	for y := x + 1; y+frameHeaderSize+minPayload <= w.size; y++ {
		if (y-x)&0xffff == 0 && stop != nil {
			if err := stop(); err != nil {
				return 0, err
			}
		}
		b, err := w.at(y, frameHeaderSize)
		if err != nil {
			return 0, err
		}
		// Cheap rejections first: most offsets fail on length or batch.
		if frameBatch(b) <= x {
			continue
		}
		total, need, ferr := parseFrame(b, y, w.size-y)
		if need > 0 {
			if b, err = w.at(y, need); err != nil {
				return 0, err
			}
			total, _, ferr = parseFrame(b, y, w.size-y)
		}
		if ferr != nil {
			continue
		}
		var e Entry
		if decodeEntry(b[frameHeaderSize+1:total], &e, nil, nil) == nil {
			return y, nil
		}
	}
	return -1, nil
}
