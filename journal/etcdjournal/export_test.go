package etcdjournal

import clientv3 "go.etcd.io/etcd/client/v3"

// withPause makes a leader freeze, as a stopped process would, when ch is
// closed: its keep-alives and its watch of the election key stop, and Done
// stays open, while its journal stays usable.
func withPause(ch chan struct{}) Option {
	return optionFunc(func(c *config) { c.pause = ch })
}

func withPrefixCount() []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithCountOnly()}
}

func withPrefixFrom(rev int64) []clientv3.OpOption {
	return []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(rev)}
}
