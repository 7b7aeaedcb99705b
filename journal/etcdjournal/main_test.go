package etcdjournal

import (
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/guestward/guestward/journal/etcdjournal/internal/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// shared is the single-member etcd that every test isolated by prefix uses;
// it starts on first use and stops after the last test.
var shared struct {
	once sync.Once
	dir  string
	c    *etcdtest.Cluster
	cli  *clientv3.Client
	err  error
	mu   sync.Mutex
	n    int
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.c != nil {
		shared.cli.Close()
		shared.c.Close()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// sharedEtcd returns the shared cluster and a client of it (not to be
// closed by the caller).
func sharedEtcd(t testing.TB) (*etcdtest.Cluster, *clientv3.Client) {
	t.Helper()
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "etcdjournal-test-")
		if shared.err != nil {
			return
		}
		shared.c, shared.err = etcdtest.Start(shared.dir, etcdtest.Options{})
		if shared.err != nil {
			return
		}
		shared.cli, shared.err = shared.c.Client()
	})
	if shared.err != nil {
		t.Fatalf("embedded etcd: %v", shared.err)
	}
	return shared.c, shared.cli
}

// newPrefix returns a prefix no other test uses.
func newPrefix(t testing.TB) string {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	shared.n++
	return fmt.Sprintf("/test/%d", shared.n)
}

// newClient returns a new client of the shared cluster, closed when the
// test ends.
func newClient(t testing.TB) *clientv3.Client {
	t.Helper()
	c, _ := sharedEtcd(t)
	cli, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
