package etcdjournal

import (
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

type (
	etcdResponseOp = etcdserverpb.ResponseOp
	mvccKV         = mvccpb.KeyValue
)
