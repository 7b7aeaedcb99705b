package signedop_test

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/guestward/guestward/reconcile"
	"github.com/guestward/guestward/reconcile/signedop"
)

// BenchmarkVerify is the cost of checking one token: the header, the
// signature (one Ed25519 verification) and the claims.
func BenchmarkVerify(b *testing.B) {
	_, priv := seedKey(1)
	tok, err := signedop.Sign(priv, "k1", validClaims())
	if err != nil {
		b.Fatal(err)
	}
	v := newTestVerifier(b)
	b.ReportAllocs()
	b.SetBytes(int64(len(tok)))
	for b.Loop() {
		if _, err := v.Verify(tok, t0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSign is the hub's cost per token.
func BenchmarkSign(b *testing.B) {
	_, priv := seedKey(1)
	c := validClaims()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := signedop.Sign(priv, "k1", c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSignedPath compares one operation on the fake cluster run
// through Handler (read the body, verify, Apply, encode the answer) with
// the same kind of operation given to Apply directly. Each iteration runs
// one of each, on the same engine and guest, in alternating order, so the
// two are measured interleaved under the same load; each is a
// configuration change under a new key, and tokens are signed before the
// timer starts, as the hub signs them. It reports the mean of each and
// their ratio (signed/direct):
//
//	go test -run '^$' -bench BenchmarkSignedPath -benchtime 300x -count 5 ./reconcile/signedop
func BenchmarkSignedPath(b *testing.B) {
	a := newAgent(b)
	ctx := ctxT(b)
	op := func(key string, mem int) reconcile.OneShot {
		return reconcile.OneShot{Key: key, Ref: web, Kind: reconcile.ActionSetConfig,
			Set: map[string]string{"memory": strconv.Itoa(mem)}}
	}
	// Consecutive operations set different values, so each is a change.
	mem := func(i, which int) int { return 1024 + 32*(i%64) + 16*which }
	now := time.Now()
	toks := make([]string, b.N)
	for i := range toks {
		toks[i] = a.tokenAt(op("signed-"+strconv.Itoa(i), mem(i, 1)), now.Add(-time.Minute), now.Add(10*time.Minute))
	}
	var direct, signed time.Duration
	runDirect := func(i int) {
		start := time.Now()
		res, err := a.e.Apply(ctx, op("direct-"+strconv.Itoa(i), mem(i, 0)))
		direct += time.Since(start)
		if err != nil || !res.Applied() {
			b.Fatalf("Apply: %v %+v", err, res)
		}
	}
	runSigned := func(i int) {
		req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/op", strings.NewReader(toks[i]))
		rec := httptest.NewRecorder()
		start := time.Now()
		a.h.ServeHTTP(rec, req)
		signed += time.Since(start)
		if rec.Code != http.StatusOK {
			b.Fatalf("answer %d %s", rec.Code, rec.Body)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			runDirect(i)
			runSigned(i)
		} else {
			runSigned(i)
			runDirect(i)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(direct.Nanoseconds())/float64(b.N), "direct-ns/op")
	b.ReportMetric(float64(signed.Nanoseconds())/float64(b.N), "signed-ns/op")
	b.ReportMetric(float64(signed)/float64(direct), "signed/direct")
}
