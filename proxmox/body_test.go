package proxmox

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// zeros reads as endless zero bytes without allocating.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// bodyTransport answers every request with one canned response.
type bodyTransport struct {
	header http.Header
	length int64 // ContentLength; -1 for unknown
	body   func() io.Reader
}

func (b *bodyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_ = r.Body.Close()
	}
	h := b.header.Clone()
	if h == nil {
		h = http.Header{}
	}
	return &http.Response{StatusCode: 200, Status: "200 OK", Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, ContentLength: b.length, Body: io.NopCloser(b.body()), Request: r}, nil
}

func transportClient(t testing.TB, rt http.RoundTripper) *Client {
	t.Helper()
	lg, _ := testLogger(t)
	c, err := New("https://pve1.example.com:8006", WithHTTPClient(&http.Client{Transport: rt}), WithOpaqueTransport(),
		WithAPIToken(testTokenID, testSecret), WithLogger(lg), WithRetry(0, 0, 0))
	if err != nil {
		t.Fatal(checkErr(t, err))
	}
	return c
}

// allocated returns the bytes f allocates on the heap.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// gzipZeros is a gzip stream of n MiB of zeros: n members of 1 MiB each,
// which a gzip reader decodes as one stream.
func gzipZeros(t testing.TB, n int) []byte {
	t.Helper()
	var one bytes.Buffer
	zw := gzip.NewWriter(&one)
	if _, err := zw.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return bytes.Repeat(one.Bytes(), n)
}

// TestLargeAnswerCostsTheLimit: refusing an answer beyond the 64 MiB bound
// costs no more memory than the bound: nothing when its declared length
// says so, about the bound when it must be read to find out (unknown
// length, or compressed, where the bound holds on the decoded bytes).
// Reading into a buffer that doubles as it fills cost about three times
// the bound.
func TestLargeAnswerCostsTheLimit(t *testing.T) {
	const answer = 100 << 20
	gz := gzipZeros(t, answer>>20)
	tests := []struct {
		name   string
		rt     *bodyTransport
		budget uint64
	}{
		{"declared length", &bodyTransport{length: answer, body: func() io.Reader { return io.LimitReader(zeros{}, answer) }}, 4 << 20},
		{"unknown length", &bodyTransport{length: -1, body: func() io.Reader { return io.LimitReader(zeros{}, answer) }}, maxResponse + maxResponse/4},
		{"gzip passed through", &bodyTransport{header: http.Header{"Content-Encoding": {"gzip"}}, length: int64(len(gz)),
			body: func() io.Reader { return bytes.NewReader(gz) }}, maxResponse + maxResponse/4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := transportClient(t, tc.rt)
			var err error
			n := allocated(func() { _, err = c.Guests(context.Background()) })
			wantErr(t, err)
			if !strings.Contains(err.Error(), "larger than") {
				t.Errorf("error %q does not say the answer is too large", err)
			}
			if n > tc.budget {
				t.Errorf("refusing a %d MiB answer allocated %d MiB, want at most %d MiB", answer>>20, n>>20, tc.budget>>20)
			}
		})
	}
}

// TestGzipAnswerDecodedBound: with Go's own transport, which asks for
// gzip and decompresses it, the declared length is gone and the bound
// holds on the decoded bytes, at about the bound's cost.
func TestGzipAnswerDecodedBound(t *testing.T) {
	gz := gzipZeros(t, 100)
	s := newSrv(t)
	s.handle("GET /cluster/resources", func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			t.Error("the client's transport did not ask for gzip")
		}
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Length", strconv.Itoa(len(gz)))
		_, _ = w.Write(gz)
	})
	c := s.tokenClient(t)
	var err error
	n := allocated(func() { _, err = c.Guests(context.Background()) })
	wantErr(t, err)
	if !strings.Contains(err.Error(), "larger than") {
		t.Errorf("error %q does not say the answer is too large", err)
	}
	if budget := uint64(maxResponse + maxResponse/4); n > budget {
		t.Errorf("refusing 100 MiB of gzip allocated %d MiB, want at most %d MiB", n>>20, budget>>20)
	}
}

// TestGzipPassedThroughDecoded: a transport of the caller's that hands
// over a compressed body: it is decoded.
func TestGzipPassedThroughDecoded(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	_, _ = io.WriteString(zw, `{"data":{"version":"8.1.4","release":"8.1","repoid":"abc"}}`)
	_ = zw.Close()
	c := transportClient(t, &bodyTransport{header: http.Header{"Content-Encoding": {"gzip"}}, length: int64(gz.Len()),
		body: func() io.Reader { return bytes.NewReader(gz.Bytes()) }})
	v, err := c.Version(context.Background())
	if err != nil || v.Version != "8.1.4" {
		t.Fatalf("Version = %+v, %v", v, checkErr(t, err))
	}
}

// TestReadBounded checks the reader at the edges of its limit, for known
// and unknown lengths, with bodies that end where their length says, and
// with the lengths a transport of the caller's might get wrong.
func TestReadBounded(t *testing.T) {
	const limit = 3*pooledBody + 100
	tests := []struct {
		name     string
		size     int64 // declared; -1 unknown
		body     int64 // actual
		tooLarge bool
	}{
		{"empty unknown", -1, 0, false},
		{"small unknown", -1, 100, false},
		{"pooled size unknown", -1, pooledBody, false},
		{"chunked unknown", -1, 2*pooledBody + 7, false},
		{"limit unknown", -1, limit, false},
		{"limit+1 unknown", -1, limit + 1, true},
		{"far beyond unknown", -1, 2 * limit, true},
		{"small known", 100, 100, false},
		{"limit known", limit, limit, false},
		{"known but longer", 100, 200, false},
		{"known but beyond the limit", 100, limit + 1, true},
		{"known but shorter", 200, 100, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := make([]byte, tc.body)
			for i := range src {
				src[i] = byte(i * 7)
			}
			buf := new(bytes.Buffer)
			out, err := readBounded(bytes.NewReader(src), buf, tc.size, limit)
			var tl *tooLargeError
			if tc.tooLarge {
				if !errors.As(err, &tl) {
					t.Fatalf("err = %v, want too large", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), src) {
				t.Fatalf("read %d bytes, not the %d sent", out.Len(), len(src))
			}
			if tc.body <= pooledBody && (tc.size < 0 || tc.size == tc.body) && out != buf {
				t.Error("a body that fits the pooled buffer was not read into it")
			}
		})
	}
}

// BenchmarkRefuseLargeAnswer measures what refusing a 100 MiB answer
// costs, in bytes allocated per refusal against the 64 MiB bound
// ("alloc/limit").
func BenchmarkRefuseLargeAnswer(b *testing.B) {
	const answer = 100 << 20
	for _, bc := range []struct {
		name   string
		length int64
	}{{"declared", answer}, {"unknown", -1}} {
		b.Run(bc.name, func(b *testing.B) {
			c := transportClient(b, &bodyTransport{length: bc.length, body: func() io.Reader { return io.LimitReader(zeros{}, answer) }})
			b.ReportAllocs()
			var total uint64
			for b.Loop() {
				total += allocated(func() {
					if _, err := c.Guests(context.Background()); err == nil {
						b.Fatal("accepted")
					}
				})
			}
			b.ReportMetric(float64(total)/float64(b.N)/maxResponse, "alloc/limit")
		})
	}
}

// BenchmarkReadAnswer measures reading ordinary answers: a small one, and
// a large one of unknown length, which is read in chunks and joined.
func BenchmarkReadAnswer(b *testing.B) {
	for _, bc := range []struct {
		name   string
		size   int64
		length int64
	}{{"4KiB-known", 4 << 10, 4 << 10}, {"4KiB-unknown", 4 << 10, -1}, {"8MiB-unknown", 8 << 20, -1}} {
		b.Run(bc.name, func(b *testing.B) {
			body := append(append([]byte(`{"data":"`), bytes.Repeat([]byte("x"), int(bc.size)-11)...), `"}`...)
			length := bc.length
			if length >= 0 {
				length = int64(len(body))
			}
			c := transportClient(b, &bodyTransport{length: length, body: func() io.Reader { return bytes.NewReader(body) }})
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := c.Version(context.Background()); err == nil || errors.Is(err, ErrTransient) {
					b.Fatalf("want the answer read and refused as not a version: %v", err)
				}
			}
		})
	}
}
