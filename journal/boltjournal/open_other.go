//go:build !unix

package boltjournal

import "os"

// Without these flags a named pipe cannot make opening wait (Windows has
// none), and O_EXCL alone keeps a created file from following a link.
const (
	openNonblock = 0
	openNoFollow = 0
)

// nlink reports one name: where the journal cannot count them, it does not
// refuse.
func nlink(os.FileInfo) uint64 { return 1 }
