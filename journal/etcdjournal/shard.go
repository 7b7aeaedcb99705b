package etcdjournal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode"

	"github.com/guestward/guestward/reconcile"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrBadShard is returned by [CampaignShard] and [ShardPrefix] for a shard
// name that cannot name a key: empty, longer than [MaxShardLen] bytes, or
// holding a slash, a space or a control character.
var ErrBadShard = errors.New("etcdjournal: bad shard name")

// MaxShardLen bounds the length of a shard name, in bytes.
const MaxShardLen = 128

// ShardPrefix returns the prefix of shard's journal and election under a
// fleet's prefix: prefix + "/shard/" + shard. Each shard is a journal of its
// own, with its own operations, idempotency keys and leader, so a fleet
// sharded under prefix must not also be opened or campaigned for at prefix
// itself.
func ShardPrefix(prefix, shard string) (string, error) {
	if err := checkShard(shard); err != nil {
		return "", err
	}
	p := trimPrefix(prefix)
	if p == "" {
		return "", errors.New("etcdjournal: shard: empty prefix")
	}
	return p + "/shard/" + shard, nil
}

func checkShard(shard string) error {
	switch {
	case shard == "":
		return fmt.Errorf("%w: empty", ErrBadShard)
	case len(shard) > MaxShardLen:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrBadShard, len(shard), MaxShardLen)
	case strings.IndexFunc(shard, func(r rune) bool { return r == '/' || unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return fmt.Errorf("%w: %q holds a slash, a space or a control character", ErrBadShard, shard)
	}
	return nil
}

// CampaignShard is [Campaign] for one shard of a fleet: it blocks until
// candidateID leads shard (see [ShardPrefix]) and returns that leadership,
// whose journal holds only the shard's operations and writes only while
// this candidate leads the shard.
//
// A shard is a set of Proxmox nodes the caller names; the replica that
// leads it runs an engine on the leader's journal whose desired state is
// [NodeProvider] of the fleet's and whose reconcile.Config.Nodes lists the
// shard's nodes, so it acts only on the shard's guests, in passes,
// one-shots and reverts alike. To
// spread a fleet over N replicas, give each replica its own shards to
// campaign for first, then let it campaign for the others as a standby:
// candidates are served in the order they campaigned, so each shard goes to
// its own replica while all are up, and a shard whose leader dies goes to
// the standby that campaigned next, whose engine recovers the dead
// leader's in-flight operations from the shard's journal.
func CampaignShard(ctx context.Context, cli *clientv3.Client, prefix, shard, candidateID string, opts ...Option) (*Leader, error) {
	p, err := ShardPrefix(prefix, shard)
	if err != nil {
		return nil, fmt.Errorf("etcdjournal: campaign for shard: %w", err)
	}
	return Campaign(ctx, cli, p, candidateID, opts...)
}

// NodeProvider returns a reconcile.DesiredProvider that passes on the
// desired state of p's guests on nodes, and leaves the others out, so that
// an engine fed by it manages only those guests (a guest the desired state
// leaves out is not managed). It is how a shard's engine is kept to the
// shard's nodes. It adds no synchronization of its own: it may be called
// concurrently when p may.
//
// An error from p comes back as it is, with the guests on nodes of whatever
// p returned beside it (a stale state wrapping reconcile.ErrStale).
func NodeProvider(p reconcile.DesiredProvider, nodes ...string) reconcile.DesiredProvider {
	return nodeProvider{p: p, nodes: slices.Clone(nodes)}
}

var _ reconcile.DesiredProvider = nodeProvider{}

type nodeProvider struct {
	p     reconcile.DesiredProvider
	nodes []string
}

func (np nodeProvider) Desired(ctx context.Context) ([]reconcile.Desired, error) {
	if np.p == nil {
		return nil, errors.New("etcdjournal: node provider: nil desired-state provider")
	}
	all, err := np.p.Desired(ctx)
	var out []reconcile.Desired
	for _, d := range all {
		if slices.Contains(np.nodes, d.Ref.Node) {
			out = append(out, d)
		}
	}
	if out == nil && all != nil {
		out = []reconcile.Desired{}
	}
	return out, err
}
