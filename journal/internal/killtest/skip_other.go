//go:build !unix

package killtest

func runtimeSkip() bool { return true }
