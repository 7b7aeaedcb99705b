package etcdjournal

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"

	"github.com/guestward/guestward/journal"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Compile-time checks of the capabilities the reconcile engine relies on.
var (
	_ journal.Journal   = (*Journal)(nil)
	_ journal.KeyLookup = (*Journal)(nil)
	_ journal.OpLister  = (*Journal)(nil)
)

// ErrUnavailable is returned (wrapped, with the etcd error beside it) when
// etcd did not answer a request: the cluster has no quorum, the endpoints
// are unreachable, or the request outlived [WithRequestTimeout]. An Append
// that fails this way may or may not have been committed; [Journal.Latest]
// tells which once etcd answers again.
var ErrUnavailable = errors.New("etcdjournal: etcd unavailable (no quorum, unreachable, or no answer in time)")

// ErrNotLeader is returned by every write of a [Leader]'s journal once that
// leader no longer holds its election key: its lease expired or was revoked,
// or it resigned. The write was not committed. The check is part of the
// write's etcd transaction, so it holds even while the leader has not yet
// noticed its loss (a paused process, a partition).
var ErrNotLeader = errors.New("etcdjournal: not the leader")

// maxAttempts bounds the read-merge-commit loop of one Append. Each failed
// attempt means another writer changed the same operation or key in
// between, which the next attempt sees; a legitimate caller never needs more
// than a few.
const maxAttempts = 64

// maxCached bounds the per-handle cache of operations this handle wrote.
const maxCached = 1 << 14

// Journal is a [journal.Journal] stored in etcd under a key prefix. Any
// number of handles, in any number of processes, may share one prefix: each
// Append is one etcd transaction that commits only if the operation's record
// and its idempotency key are as the append saw them, so concurrent writers
// never lose an update or both win a key.
//
// A Journal is safe for concurrent use. It does not own the etcd client:
// Close leaves the client open.
type Journal struct {
	cli   *clientv3.Client
	l     layout
	cfg   config
	fence *fence // nil: writes are not fenced

	mu     sync.RWMutex // held shared by every call, exclusively by Close
	closed bool

	cacheMu sync.Mutex
	cache   map[string]cached

	stop chan struct{}
	done chan struct{}
}

// cached is what this handle last committed for an operation still in
// flight: it lets the next Append of that operation skip the read. A stale
// entry costs one failed compare and a read, never a wrong write.
type cached struct {
	e      journal.Entry
	modRev int64
}

// fence is a leader's election key and its create revision; a fenced
// journal's writes commit only while that key exists with that revision.
type fence struct {
	key string
	rev int64
}

// layout names the keys of one journal.
//
//	<prefix>/op/<op ID>    the operation's latest merged entry (Entry.MarshalBinary);
//	                       its create revision orders operations by start
//	<prefix>/key/<key>     the op ID that holds an idempotency key
//	<prefix>/leader/...    the election (see Campaign)
type layout struct{ prefix string }

func (l layout) ops() string         { return l.prefix + "/op/" }
func (l layout) op(id string) string { return l.prefix + "/op/" + id }
func (l layout) key(k string) string { return l.prefix + "/key/" + k }
func (l layout) election() string    { return l.prefix + "/leader" }

// isOp reports whether key is the record key of op id.
func (l layout) isOp(key []byte, id string) bool {
	p, n := len(l.prefix), len(l.prefix)+len("/op/")
	return len(key) == n+len(id) && string(key[:p]) == l.prefix && string(key[p:n]) == "/op/" && string(key[n:]) == id
}

// Open opens the journal stored under prefix in the etcd cluster cli talks
// to, creating nothing until the first Append. It reads the stored records
// page by page, checking that each decodes (damage is an error wrapping
// journal.ErrCorrupt), and drops the terminal operations that retention no
// longer keeps.
//
// prefix is a directory-like key prefix such as "/guestward/fleet-a"; the
// journal owns every key under prefix+"/". Two journals' prefixes must not
// nest. Handles opened on the same prefix, here or in other processes, see
// one journal.
func Open(ctx context.Context, cli *clientv3.Client, prefix string, opts ...Option) (*Journal, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o.apply(&cfg)
	}
	return open(ctx, cli, prefix, cfg, nil)
}

func open(ctx context.Context, cli *clientv3.Client, prefix string, cfg config, f *fence) (*Journal, error) {
	if cli == nil {
		return nil, errors.New("etcdjournal: open: nil etcd client")
	}
	prefix = trimPrefix(prefix)
	if prefix == "" {
		return nil, errors.New("etcdjournal: open: empty prefix (give the journal a prefix of its own, such as /guestward/journal)")
	}
	j := &Journal{
		cli:   cli,
		l:     layout{prefix},
		cfg:   cfg,
		fence: f,
		cache: make(map[string]cached),
	}
	if _, err := j.Compact(ctx); err != nil {
		return nil, fmt.Errorf("etcdjournal: open %s: %w", prefix, err)
	}
	if cfg.compactInterval > 0 {
		j.stop, j.done = make(chan struct{}), make(chan struct{})
		go j.compactLoop()
	}
	return j, nil
}

// Prefix returns the key prefix the journal lives under, without its
// trailing slash.
func (j *Journal) Prefix() string { return j.l.prefix }

// act names a call in its errors: a verb and, when it has one, the op ID
// or key it concerns. It is a value rather than a formatted string so that
// a call that succeeds formats nothing.
type act struct{ verb, arg string }

func (a act) String() string {
	if a.arg == "" {
		return a.verb
	}
	return a.verb + " " + strconv.Quote(a.arg)
}

// enter takes the shared lock of a call and checks the journal is open.
func (j *Journal) enter(what act) error {
	j.mu.RLock()
	if j.closed {
		j.mu.RUnlock()
		return fmt.Errorf("etcdjournal: %s %s: %w", j.l.prefix, what, journal.ErrClosed)
	}
	return nil
}

// request returns the context for one etcd request.
func (j *Journal) request(ctx context.Context) (context.Context, context.CancelFunc) {
	if j.cfg.requestTimeout > 0 {
		return context.WithTimeout(ctx, j.cfg.requestTimeout)
	}
	return ctx, func() {}
}

// ioErr wraps an error from etcd: the caller's context error when that
// ended, ErrUnavailable otherwise.
func (j *Journal) ioErr(ctx context.Context, what act, err error) error {
	if cerr := ctx.Err(); cerr != nil {
		// A context that ended with a cause (a Leader's Context ends with
		// ErrNotLeader) keeps it matchable.
		if cause := context.Cause(ctx); cause != nil && cause != cerr {
			return fmt.Errorf("etcdjournal: %s %s: %w: %w (%v)", j.l.prefix, what, cerr, cause, err)
		}
		return fmt.Errorf("etcdjournal: %s %s: %w (%v)", j.l.prefix, what, cerr, err)
	}
	return fmt.Errorf("etcdjournal: %s %s: %w: %w", j.l.prefix, what, ErrUnavailable, err)
}

// ctxErr returns ctx's error, joined with its cause when that differs (a
// Leader's Context ends with ErrNotLeader).
func ctxErr(ctx context.Context) error {
	cerr := ctx.Err()
	if cause := context.Cause(ctx); cause != nil && cause != cerr {
		return fmt.Errorf("%w: %w", cerr, cause)
	}
	return cerr
}

// opState is what an Append knows of its operation: the latest merged entry
// (nil when the journal holds none) with its mod revision, and, when the
// entry names an idempotency key, the op that holds it.
type opState struct {
	prev     *journal.Entry
	modRev   int64
	keyOwner string // "" when nobody holds the key
	verified bool   // read from etcd, not assumed
}

// Append records e after checking it against the operation's stored state
// with journal.Merge and the idempotency key's owner, in one etcd
// transaction whose compare makes the check and the write atomic. It returns
// once etcd has committed the record (a quorum of members has it on disk).
//
// Errors: the sentinels of journal.Journal for bad input; [ErrNotLeader]
// from a [Leader]'s journal whose leadership is gone; [ErrUnavailable] when
// etcd did not answer (the record may or may not be committed); ctx.Err()
// when ctx ended, before any request (nothing written) or during one (may
// be committed).
func (j *Journal) Append(ctx context.Context, e journal.Entry) error {
	what := act{"append op", e.OpID}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("etcdjournal: %s %s: %w", j.l.prefix, what, ctxErr(ctx))
	}
	if err := j.enter(what); err != nil {
		return err
	}
	defer j.mu.RUnlock()
	if e.At.IsZero() {
		e.At = j.cfg.now()
	}
	e.At = e.At.UTC()
	if err := e.Validate(); err != nil {
		return err
	}
	st := j.assumed(e)
	for attempt := 0; ; attempt++ {
		if attempt == maxAttempts {
			return fmt.Errorf("etcdjournal: %s %s: %w: gave up after %d conflicting concurrent writes", j.l.prefix, what, ErrUnavailable, maxAttempts)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("etcdjournal: %s %s: %w", j.l.prefix, what, ctxErr(ctx))
		}
		next, err := journal.Merge(st.prev, e)
		if err == nil && st.prev == nil && next.IdempKey != "" && st.keyOwner != "" && st.keyOwner != e.OpID {
			err = fmt.Errorf("journal: op %q: %w: key %q belongs to op %q", e.OpID, journal.ErrKeyConflict, next.IdempKey, st.keyOwner)
		}
		if err != nil {
			if st.verified {
				return err
			}
			// The assumption was wrong or stale: decide on what etcd holds.
			if st, err = j.read(ctx, e, what); err != nil {
				return err
			}
			continue
		}
		val, err := next.MarshalBinary()
		if err != nil {
			return fmt.Errorf("etcdjournal: %s %s: %w", j.l.prefix, what, err)
		}
		committed, rev, err := j.commit(ctx, e.OpID, &st, &next, val, what)
		if err != nil {
			j.forget(e.OpID)
			return err
		}
		if committed {
			j.remember(next, rev)
			return nil
		}
		// Another writer changed the op or the key since st, or the fence
		// is gone: decide again on what etcd holds now. (Reading in a
		// second request, rather than in the transaction's else branch,
		// keeps every committed transaction as small as its records need;
		// a failed compare is the rare case.)
		if st, err = j.read(ctx, e, what); err != nil {
			j.forget(e.OpID)
			return err
		}
	}
}

// assumed is the state Append starts from without reading: what this handle
// last committed for the op, or "no record, key free" for a Started record.
// Anything else is read first.
func (j *Journal) assumed(e journal.Entry) opState {
	if e.State == journal.Started {
		return opState{}
	}
	j.cacheMu.Lock()
	c, ok := j.cache[e.OpID]
	j.cacheMu.Unlock()
	if !ok {
		// Not verified and no prev: Merge refuses, and Append reads.
		return opState{}
	}
	prev := c.e
	return opState{prev: &prev, modRev: c.modRev, keyOwner: ownerOf(&prev)}
}

func ownerOf(e *journal.Entry) string {
	if e.IdempKey != "" {
		return e.OpID
	}
	return ""
}

func (j *Journal) remember(e journal.Entry, modRev int64) {
	j.cacheMu.Lock()
	defer j.cacheMu.Unlock()
	if e.State.Terminal() {
		delete(j.cache, e.OpID)
		return
	}
	if len(j.cache) >= maxCached {
		for k := range j.cache { // drop any one; the cache only saves reads
			delete(j.cache, k)
			break
		}
	}
	j.cache[e.OpID] = cached{e: e, modRev: modRev}
}

func (j *Journal) forget(opID string) {
	j.cacheMu.Lock()
	delete(j.cache, opID)
	j.cacheMu.Unlock()
}

func (j *Journal) forgetAll() {
	j.cacheMu.Lock()
	clear(j.cache)
	j.cacheMu.Unlock()
}

// read fetches the op's record, the key's owner and (when fenced) the
// fence, in one read-only transaction, and fails with ErrNotLeader when the
// fence is gone.
func (j *Journal) read(ctx context.Context, e journal.Entry, what act) (opState, error) {
	ops := make([]clientv3.Op, 1, 3)
	ops[0] = clientv3.OpGet(j.l.op(e.OpID))
	if e.IdempKey != "" {
		ops = append(ops, clientv3.OpGet(j.l.key(e.IdempKey)))
	}
	if j.fence != nil {
		ops = append(ops, clientv3.OpGet(j.fence.key, clientv3.WithKeysOnly()))
	}
	rctx, cancel := j.request(ctx)
	defer cancel()
	resp, err := j.cli.Txn(rctx).Then(ops...).Commit()
	if err != nil {
		return opState{}, j.ioErr(ctx, what, err)
	}
	if j.fence != nil {
		if err := j.checkFence(resp.Responses[len(resp.Responses)-1], what); err != nil {
			j.forgetAll()
			return opState{}, err
		}
	}
	st := opState{verified: true}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		prev, err := j.decode(kvs[0].Key, kvs[0].Value)
		if err != nil {
			return opState{}, fmt.Errorf("etcdjournal: %s %s: %w", j.l.prefix, what, err)
		}
		st.prev, st.modRev = &prev, kvs[0].ModRevision
	}
	if e.IdempKey != "" {
		if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
			st.keyOwner = string(kvs[0].Value)
		}
	}
	return st, nil
}

// commit writes next, whose encoding is val, in one transaction that
// commits only if the op and its key are still as st says and the fence
// holds. It reports whether it committed, and at which revision; a failed
// compare is not an error (the caller reads and decides again).
func (j *Journal) commit(ctx context.Context, opID string, st *opState, next *journal.Entry, val []byte, what act) (ok bool, rev int64, err error) {
	opKey := j.l.op(opID)
	cmps := make([]clientv3.Cmp, 1, 3)
	cmps[0] = clientv3.Compare(clientv3.ModRevision(opKey), "=", st.modRev)
	puts := make([]clientv3.Op, 1, 2)
	puts[0] = clientv3.OpPut(opKey, string(val))
	if k := next.IdempKey; k != "" {
		kk := j.l.key(k)
		if st.prev == nil {
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(kk), "=", 0))
			puts = append(puts, clientv3.OpPut(kk, opID))
		} else {
			cmps = append(cmps, clientv3.Compare(clientv3.Value(kk), "=", opID))
		}
	}
	if j.fence != nil {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(j.fence.key), "=", j.fence.rev))
	}
	rctx, cancel := j.request(ctx)
	defer cancel()
	resp, err := j.cli.Txn(rctx).If(cmps...).Then(puts...).Commit()
	if err != nil {
		return false, 0, j.ioErr(ctx, what, err)
	}
	if !resp.Succeeded {
		return false, 0, nil
	}
	return true, resp.Header.Revision, nil
}

// checkFence reports ErrNotLeader unless the range response holds the
// leader's key with its create revision.
func (j *Journal) checkFence(r *etcdResponseOp, what act) error {
	kvs := r.GetResponseRange().Kvs
	if len(kvs) == 0 || kvs[0].CreateRevision != j.fence.rev {
		return fmt.Errorf("etcdjournal: %s %s: %w: election key %s is gone", j.l.prefix, what, ErrNotLeader, j.fence.key)
	}
	return nil
}

// decode decodes an op record stored under key.
func (j *Journal) decode(key, val []byte) (journal.Entry, error) {
	var e journal.Entry
	err := j.decodeInto(key, val, &e)
	return e, err
}

// decodeInto decodes an op record stored under key into *e, and checks it
// is the record of the op its key names.
func (j *Journal) decodeInto(key, val []byte, e *journal.Entry) error {
	if err := e.UnmarshalBinary(val); err != nil {
		return fmt.Errorf("record %s: %w", key, err)
	}
	if !j.l.isOp(key, e.OpID) {
		id := e.OpID
		*e = journal.Entry{}
		return fmt.Errorf("record %s: %w: holds op %q", key, journal.ErrCorrupt, id)
	}
	return nil
}

// Latest returns the latest state of operation opID, read linearizably.
func (j *Journal) Latest(ctx context.Context, opID string) (journal.Entry, bool, error) {
	what := act{"latest op", opID}
	if err := ctx.Err(); err != nil {
		return journal.Entry{}, false, fmt.Errorf("etcdjournal: %s %s: %w", j.l.prefix, what, err)
	}
	if err := j.enter(what); err != nil {
		return journal.Entry{}, false, err
	}
	defer j.mu.RUnlock()
	return j.latest(ctx, opID, what)
}

func (j *Journal) latest(ctx context.Context, opID string, what act) (journal.Entry, bool, error) {
	if opID == "" {
		return journal.Entry{}, false, nil
	}
	rctx, cancel := j.request(ctx)
	defer cancel()
	resp, err := j.cli.Get(rctx, j.l.op(opID))
	if err != nil {
		return journal.Entry{}, false, j.ioErr(ctx, what, err)
	}
	if len(resp.Kvs) == 0 {
		return journal.Entry{}, false, nil
	}
	e, err := j.decode(resp.Kvs[0].Key, resp.Kvs[0].Value)
	if err != nil {
		return journal.Entry{}, false, fmt.Errorf("etcdjournal: %s %s: %w", j.l.prefix, what, err)
	}
	return e, true, nil
}

// LatestByKey returns the latest state of the operation that holds
// idempKey.
func (j *Journal) LatestByKey(ctx context.Context, idempKey string) (journal.Entry, bool, error) {
	what := act{"latest by key", idempKey}
	if err := ctx.Err(); err != nil {
		return journal.Entry{}, false, fmt.Errorf("etcdjournal: %s %s: %w", j.l.prefix, what, err)
	}
	if err := j.enter(what); err != nil {
		return journal.Entry{}, false, err
	}
	defer j.mu.RUnlock()
	return j.byKey(ctx, idempKey, what)
}

func (j *Journal) byKey(ctx context.Context, idempKey string, what act) (journal.Entry, bool, error) {
	if idempKey == "" {
		return journal.Entry{}, false, nil
	}
	rctx, cancel := j.request(ctx)
	defer cancel()
	resp, err := j.cli.Get(rctx, j.l.key(idempKey))
	if err != nil {
		return journal.Entry{}, false, j.ioErr(ctx, what, err)
	}
	if len(resp.Kvs) == 0 {
		return journal.Entry{}, false, nil
	}
	owner := string(resp.Kvs[0].Value)
	// Read the owner at the same revision, so a compaction between the two
	// reads cannot make a held key look free or the other way round.
	rctx2, cancel2 := j.request(ctx)
	defer cancel2()
	oresp, err := j.cli.Get(rctx2, j.l.op(owner), clientv3.WithRev(resp.Header.Revision))
	if err != nil {
		return journal.Entry{}, false, j.ioErr(ctx, what, err)
	}
	if len(oresp.Kvs) == 0 {
		return journal.Entry{}, false, fmt.Errorf("etcdjournal: %s %s: %w: key held by op %q, which has no record", j.l.prefix, what, journal.ErrCorrupt, owner)
	}
	e, err := j.decode(oresp.Kvs[0].Key, oresp.Kvs[0].Value)
	if err != nil {
		return journal.Entry{}, false, fmt.Errorf("etcdjournal: %s %s: %w", j.l.prefix, what, err)
	}
	if e.IdempKey != idempKey {
		return journal.Entry{}, false, fmt.Errorf("etcdjournal: %s %s: %w: key index names op %q, which holds key %q", j.l.prefix, what, journal.ErrCorrupt, owner, e.IdempKey)
	}
	return e, true, nil
}

// AlreadyApplied reports whether the operation holding idempKey has
// Succeeded.
func (j *Journal) AlreadyApplied(ctx context.Context, idempKey string) (bool, error) {
	what := act{"already applied", idempKey}
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("etcdjournal: %s %s: %w", j.l.prefix, what, err)
	}
	if err := j.enter(what); err != nil {
		return false, err
	}
	defer j.mu.RUnlock()
	e, ok, err := j.byKey(ctx, idempKey, what)
	return ok && e.State == journal.Succeeded, err
}

// InFlight returns the operations not yet terminal, in start order, read
// page by page at one revision.
func (j *Journal) InFlight(ctx context.Context) ([]journal.Entry, error) {
	return j.list(ctx, act{verb: "in flight"}, false)
}

// Ops returns every operation the journal holds, in start order, read page
// by page at one revision.
func (j *Journal) Ops(ctx context.Context) ([]journal.Entry, error) {
	return j.list(ctx, act{verb: "ops"}, true)
}

// list returns the operations (all, or those in flight) in start order. It
// decodes each record straight into its place in the result, which Ops
// sizes once from the record count etcd reports with the first page, and
// sorts the result in place: the listing holds one page of raw records and
// the decoded result, and no copy of either.
func (j *Journal) list(ctx context.Context, what act, all bool) ([]journal.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("etcdjournal: %s %s: %w", j.l.prefix, what, err)
	}
	if err := j.enter(what); err != nil {
		return nil, err
	}
	defer j.mu.RUnlock()
	var ops startOrder
	err := j.scan(ctx, what, func(kv *mvccKV, total int64) error {
		if all && ops.e == nil {
			ops.e, ops.rev = make([]journal.Entry, 0, total), make([]int64, 0, total)
		}
		ops.e = append(ops.e, journal.Entry{})
		e := &ops.e[len(ops.e)-1]
		if err := j.decodeInto(kv.Key, kv.Value, e); err != nil {
			return fmt.Errorf("etcdjournal: %s %s: %w", j.l.prefix, what, err)
		}
		if !all && e.State.Terminal() {
			*e = journal.Entry{} // let go of its strings
			ops.e = ops.e[:len(ops.e)-1]
			return nil
		}
		ops.rev = append(ops.rev, kv.CreateRevision)
		return nil
	})
	if err != nil {
		return nil, err
	}
	// An op record's create revision is when its Started record committed:
	// the start order across every writer.
	sort.Sort(ops)
	if ops.e == nil {
		ops.e = []journal.Entry{}
	}
	return ops.e, nil
}

// startOrder sorts operations by the create revisions of their records.
type startOrder struct {
	e   []journal.Entry
	rev []int64
}

func (s startOrder) Len() int           { return len(s.e) }
func (s startOrder) Less(a, b int) bool { return s.rev[a] < s.rev[b] }
func (s startOrder) Swap(a, b int) {
	s.e[a], s.e[b] = s.e[b], s.e[a]
	s.rev[a], s.rev[b] = s.rev[b], s.rev[a]
}

// scan calls fn for every op record, page by page, all pages at the
// revision of the first so the listing is one consistent snapshot. total is
// the number of op records at that revision. fn must not keep kv, whose
// page is dropped once fn has seen its records.
func (j *Journal) scan(ctx context.Context, what act, fn func(kv *mvccKV, total int64) error) error {
	from, end := j.l.ops(), clientv3.GetPrefixRangeEnd(j.l.ops())
	var rev, total int64
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(j.cfg.pageSize)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		rctx, cancel := j.request(ctx)
		resp, err := j.cli.Get(rctx, from, opts...)
		cancel()
		if err != nil {
			return j.ioErr(ctx, what, err)
		}
		if rev == 0 {
			rev, total = resp.Header.Revision, resp.Count
		}
		for _, kv := range resp.Kvs {
			if err := fn(kv, total); err != nil {
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Close stops the background compaction and makes every later call fail
// with journal.ErrClosed. It waits for calls in progress. It does not close
// the etcd client. Calling Close again returns nil.
func (j *Journal) Close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	j.mu.Unlock()
	if j.stop != nil {
		close(j.stop)
		<-j.done
	}
	return nil
}
