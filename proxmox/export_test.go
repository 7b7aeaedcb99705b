package proxmox

import (
	"log/slog"
	"testing"
	"time"
)

// Hooks for package proxmox_test, whose tests run the client against the
// fake server of package proxmoxtest (which imports this package, so those
// tests cannot live here). They share this package's secret scanning.

const (
	TestTokenID  = testTokenID
	TestSecret   = testSecret
	TestPassword = testPassword
)

// CheckErr scans every printed form of err for secrets.
func CheckErr(t testing.TB, err error) error { return checkErr(t, err) }

// AssertNoSecret fails t if text contains a secret.
func AssertNoSecret(t testing.TB, what, text string) { assertNoSecret(t, what, text) }

// ScannedLogger returns a Debug logger whose output is scanned for secrets.
func ScannedLogger(t testing.TB) *slog.Logger { l, _ := testLogger(t); return l }

// WithClock replaces the client's clock for ticket ageing.
func WithClock(now func() time.Time) Option { return withClock(now) }
