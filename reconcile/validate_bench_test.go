package reconcile_test

import (
	"testing"

	"github.com/guestward/guestward/proxmox"
	"github.com/guestward/guestward/reconcile"
)

// BenchmarkValidateDesired validates a desired state of 2,000 QEMU guests
// with a typical configuration each, as every pass does.
func BenchmarkValidateDesired(b *testing.B) {
	ds := make([]reconcile.Desired, 0, 2000)
	for i := range cap(ds) {
		declared, _ := typicalConfig(i)
		ds = append(ds, reconcile.Desired{Ref: proxmox.Ref{Node: "pve1", Type: proxmox.QEMU, VMID: 1000 + i}, Config: declared})
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := reconcile.ValidateDesired(ds); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/float64(len(ds)), "µs/guest")
}
