package queue_test

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/guestward/guestward/queue"
)

// Every change to a guest goes through one lane per guest: the two changes
// to guest 100 run one after the other, in the order they were submitted,
// while guest 101 is free to run alongside.
func Example() {
	q := queue.New[int](queue.WithMaxConcurrent(8))
	ctx := context.Background()

	var mu sync.Mutex
	log := map[int][]string{}
	change := func(vmid int, what string) func(context.Context) error {
		return func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			log[vmid] = append(log[vmid], what)
			return nil
		}
	}

	h1, _ := q.Submit(ctx, 100, change(100, "set memory=4096"))
	h2, _ := q.Submit(ctx, 100, change(100, "start"))
	if err := q.Do(ctx, 101, change(101, "stop")); err != nil {
		fmt.Println(err)
	}
	for _, h := range []*queue.Handle[int]{h1, h2} {
		if err := h.Wait(ctx); err != nil {
			fmt.Println(err)
		}
	}
	if err := q.Close(ctx); err != nil {
		fmt.Println(err)
	}
	fmt.Println(100, log[100])
	fmt.Println(101, log[101])
	// Output:
	// 100 [set memory=4096 start]
	// 101 [stop]
}

// Repeated requests to reconcile the same guest collapse into one while
// they wait: only the newest runs, and everyone who asked gets its result.
func ExampleCoalesce() {
	q := queue.New[string]()
	ctx := context.Background()

	// Hold the guest's lane so the requests below have to wait.
	release := make(chan struct{})
	busy, _ := q.Submit(ctx, "pve1/qemu/100", func(context.Context) error { <-release; return nil })

	var handles []*queue.Handle[string]
	for i := 1; i <= 3; i++ {
		h, _ := q.Submit(ctx, "pve1/qemu/100", func(context.Context) error {
			fmt.Println("reconcile pass", i)
			return nil
		}, queue.Coalesce("reconcile"))
		handles = append(handles, h)
	}
	close(release)
	_ = busy.Wait(ctx)
	for _, h := range handles {
		_ = h.Wait(ctx)
	}
	fmt.Println("same handle:", handles[0] == handles[2])
	// Output:
	// reconcile pass 3
	// same handle: true
}

// A job whose context ends before its turn never runs; its result is the
// context's error, available at once.
func ExampleQueue_Submit() {
	q := queue.New[string]()
	release := make(chan struct{})
	started := make(chan struct{})
	_, _ = q.Submit(context.Background(), "vm", func(context.Context) error {
		close(started)
		<-release
		return nil
	})
	<-started

	ctx, cancel := context.WithCancel(context.Background())
	h, _ := q.Submit(ctx, "vm", func(context.Context) error {
		fmt.Println("never printed")
		return nil
	})
	cancel()
	err := h.Wait(context.Background()) // the lane is still busy
	fmt.Println(errors.Is(err, context.Canceled))

	close(release)
	_ = q.Close(context.Background())
	// Output:
	// true
}
