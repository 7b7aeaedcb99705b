package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/guestward/guestward/journal"
	"github.com/guestward/guestward/journal/boltjournal"
)

// Journal backends, as Backend names them.
const (
	BackendFile = "file"
	BackendBolt = "bbolt"
)

// Backend returns the journal backend a path's extension picks: bbolt for
// ".db", ".bolt" and ".bbolt", the file backend for anything else.
func Backend(path string) string {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".db", ".bolt", ".bbolt":
		return BackendBolt
	default:
		return BackendFile
	}
}

// OpenJournal opens (creating it if needed) the journal at path with the
// backend its extension picks, and returns it with the backend's name. Its
// errors explain themselves to a person: a journal another process holds,
// a damaged journal and how to inspect it.
func OpenJournal(path string, logger *slog.Logger) (journal.Journal, string, error) {
	if path == "" {
		return nil, "", Usagef("no journal: set -journal or GUESTWARD_JOURNAL (a path ending in .db, .bolt or .bbolt picks the bbolt backend, any other the file backend)")
	}
	backend := Backend(path)
	var (
		j   journal.Journal
		err error
	)
	if backend == BackendBolt {
		j, err = boltjournal.Open(path, boltjournal.WithLogger(logger))
	} else {
		j, err = journal.OpenFile(path, journal.WithLogger(logger))
	}
	switch {
	case err == nil:
		return j, backend, nil
	case errors.Is(err, journal.ErrLocked):
		return nil, backend, fmt.Errorf("journal %s is in use by another process (is another agent running on it?): %w", path, err)
	case errors.Is(err, journal.ErrCorrupt):
		return nil, backend, fmt.Errorf("journal %s is damaged; nothing was changed. Inspect it, and repair it only after reading what would be lost: %w", path, err)
	default:
		return nil, backend, fmt.Errorf("opening the journal (%s backend): %w", backend, err)
	}
}

// LogFlags holds the logging settings. It is filled in by flag parsing
// and read by Logger afterwards.
type LogFlags struct {
	Level  ChoiceFlag
	Format ChoiceFlag
}

// NewLogFlags returns logging settings with the given default level.
func NewLogFlags(defaultLevel string) *LogFlags {
	return &LogFlags{
		Level:  ChoiceFlag{Value: defaultLevel, Choices: []string{"debug", "info", "warn", "error"}},
		Format: ChoiceFlag{Value: "text", Choices: []string{"text", "json"}},
	}
}

// LogBindings ties the logging flags to their environment variables.
func LogBindings() []Binding {
	return []Binding{{"log-level", "GUESTWARD_LOG_LEVEL"}, {"log-format", "GUESTWARD_LOG_FORMAT"}}
}

// Register defines -log-level and -log-format on fs.
func (l *LogFlags) Register(fs *flag.FlagSet) {
	fs.Var(&l.Level, "log-level", "log `level`: debug, info, warn or error (env GUESTWARD_LOG_LEVEL)")
	fs.Var(&l.Format, "log-format", "log `format`: text or json, as log/slog writes them (env GUESTWARD_LOG_FORMAT)")
}

// Logger returns a logger writing to w at the chosen level and format.
func (l *LogFlags) Logger(w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(l.Level.Value)) // the choices are valid slog levels
	opts := &slog.HandlerOptions{Level: level}
	if l.Format.Value == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
