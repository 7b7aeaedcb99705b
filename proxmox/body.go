package proxmox

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Reading answers. A body is held whole, for the JSON decoder, so its size
// is bounded (maxResponse); the bound must also bound memory. Reading into
// a bytes.Buffer until it overflows doubles the buffer on the way: refusing
// a 100 MB answer under a 64 MiB bound would cost about 200 MiB. Instead,
// an answer whose length is declared beyond the bound is refused unread,
// one of known length is read into a buffer of exactly that size, and one
// of unknown length (chunked, or compressed) is read in chunks that are
// joined only once the end is reached within the bound.

// Chunk sizes for answers of unknown length: the first MiB is read into the
// pooled buffer, which the pool keeps up to that size; the rest in fresh
// chunks of 1 MiB.
const (
	pooledBody = 1 << 20
	bodyChunk  = 1 << 20
)

// tooLargeError is an answer beyond the client's bound.
type tooLargeError struct {
	limit    int64
	declared int64 // the declared length, or -1 when it was read up to the bound
}

func (e *tooLargeError) Error() string {
	if e.declared >= 0 {
		return fmt.Sprintf("response body of %d bytes is larger than %d bytes", e.declared, e.limit)
	}
	return fmt.Sprintf("response body larger than %d bytes", e.limit)
}

// readBody reads and closes resp's body, at most limit decoded bytes. The
// buffer comes from c's pool; the caller returns it with putBuf.
func (c *Client) readBody(resp *http.Response, limit int64) (*bytes.Buffer, error) {
	defer resp.Body.Close()
	r := io.Reader(resp.Body)
	size := int64(-1)
	switch enc := strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Encoding"))); {
	case enc == "" || enc == "identity" || resp.Uncompressed:
		// Go's transport decompresses what it asked to be compressed,
		// and then reports no length: only an unencoded body's length
		// is its size.
		size = resp.ContentLength
	case enc == "gzip" || enc == "x-gzip":
		// A transport of the caller's that passes compressed bodies
		// through. The declared length is the compressed one, which
		// says nothing about the decoded size; the bound holds on the
		// decoded bytes.
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		r = zr
	}
	if size > limit {
		return nil, &tooLargeError{limit: limit, declared: size}
	}
	buf := c.bufs.Get().(*bytes.Buffer)
	out, err := readBounded(r, buf, size, limit)
	if err != nil || out != buf {
		c.putBuf(buf)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// readBounded reads all of r, which holds size bytes or, for size < 0, an
// unknown number, refusing more than limit bytes. It reads into buf while
// the body fits in pooledBody (or, for a known size, buf grown to hold
// it), and otherwise returns a new buffer. Memory stays within about the
// body's size, or the limit when the body is refused, plus one chunk.
func readBounded(r io.Reader, buf *bytes.Buffer, size, limit int64) (*bytes.Buffer, error) {
	r = io.LimitReader(r, limit+1)
	first := int64(pooledBody)
	if size >= 0 {
		// One byte more than declared, to see the end without growing
		// (a transport of the caller's may not hold the body to its
		// length).
		first = size + 1
	}
	first = min(first, limit+1)
	if size >= 0 && int64(buf.Cap()) < first {
		buf.Grow(int(first)) // one allocation of the declared size
	}
	done, err := fill(buf, r, int(first))
	if err != nil {
		return buf, err
	}
	if done {
		return buf, nil
	}
	if int64(buf.Len()) > limit {
		return buf, &tooLargeError{limit: limit, declared: -1}
	}
	// The body goes on: read the rest in chunks, counting against the
	// limit, and join them once it ends.
	chunks := [][]byte{buf.Bytes()}
	total := int64(buf.Len())
	for {
		chunk := make([]byte, bodyChunk)
		n, err := io.ReadFull(r, chunk)
		total += int64(n)
		if n > 0 {
			chunks = append(chunks, chunk[:n])
		}
		if total > limit {
			return buf, &tooLargeError{limit: limit, declared: -1}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return buf, err
		}
	}
	if len(chunks) == 1 {
		return buf, nil // it ended right at the pooled buffer's end
	}
	joined := make([]byte, 0, total)
	for i := range chunks {
		joined = append(joined, chunks[i]...)
		chunks[i] = nil // free as we go
	}
	return bytes.NewBuffer(joined), nil
}

// fill reads r into buf until r ends (done) or buf holds upTo bytes,
// growing buf by doubling but never beyond upTo.
func fill(buf *bytes.Buffer, r io.Reader, upTo int) (done bool, err error) {
	for buf.Len() < upTo {
		if buf.Available() == 0 {
			buf.Grow(min(max(buf.Cap(), 4096), upTo-buf.Len()))
		}
		p := buf.AvailableBuffer()
		p = p[:min(cap(p), upTo-buf.Len())]
		n, err := r.Read(p)
		buf.Write(p[:n])
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
	return false, nil
}
