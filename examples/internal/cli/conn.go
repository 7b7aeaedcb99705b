package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/guestward/guestward/proxmox"
)

// Environment variables read by Conn besides those bound to its flags.
const (
	// EnvTokenSecret holds the API token's secret itself.
	EnvTokenSecret = "GUESTWARD_TOKEN_SECRET"
)

// Conn holds the settings for reaching a Proxmox VE cluster. Register its
// flags, parse, apply ConnBindings, then call Conn.Client. It is filled in
// by flag parsing and must not be changed while Client runs.
type Conn struct {
	URL          string
	TokenID      string
	SecretFile   string
	CAFile       string
	Fingerprints ListFlag
	Timeout      time.Duration
}

// Register defines the connection flags on fs.
func (c *Conn) Register(fs *flag.FlagSet) {
	fs.StringVar(&c.URL, "url", "", "Proxmox VE API `URL`, https://host:8006 (env GUESTWARD_URL)")
	fs.StringVar(&c.TokenID, "token-id", "", "API token `id`, user@realm!name (env GUESTWARD_TOKEN_ID)")
	fs.StringVar(&c.SecretFile, "token-secret-file", "",
		"`file` holding the API token secret (env GUESTWARD_TOKEN_SECRET_FILE); or put the secret itself in GUESTWARD_TOKEN_SECRET")
	fs.StringVar(&c.CAFile, "ca-file", "", "PEM `file` of the CA certificates that sign Proxmox's certificate, e.g. /etc/pve/pve-root-ca.pem (env GUESTWARD_CA_FILE)")
	fs.Var(&c.Fingerprints, "fingerprint",
		"SHA-256 `fingerprint` of Proxmox's certificate, as the GUI shows it; repeat, or separate with commas, to accept several (env GUESTWARD_FINGERPRINT)")
	fs.DurationVar(&c.Timeout, "http-timeout", proxmox.DefaultTimeout, "bound on each HTTP request to Proxmox (env GUESTWARD_HTTP_TIMEOUT)")
}

// ConnBindings ties the connection flags to their environment variables.
func ConnBindings() []Binding {
	return []Binding{
		{"url", "GUESTWARD_URL"},
		{"token-id", "GUESTWARD_TOKEN_ID"},
		{"token-secret-file", "GUESTWARD_TOKEN_SECRET_FILE"},
		{"ca-file", "GUESTWARD_CA_FILE"},
		{"fingerprint", "GUESTWARD_FINGERPRINT"},
		{"http-timeout", "GUESTWARD_HTTP_TIMEOUT"},
	}
}

// Client checks the settings, reads the token secret and the CA file, and
// returns a client. It does no network I/O. Every error is a *UsageError:
// the settings are wrong. logger, if not nil, receives a warning for a
// secret file that other users may read, and the client's log. extra
// options are added last.
func (c *Conn) Client(env LookupEnv, logger *slog.Logger, extra ...proxmox.Option) (*proxmox.Client, error) {
	if c.URL == "" {
		return nil, Usagef("no Proxmox URL: set -url or GUESTWARD_URL (https://host:8006)")
	}
	if c.TokenID == "" {
		return nil, Usagef("no API token: set -token-id or GUESTWARD_TOKEN_ID (user@realm!name)")
	}
	secret, err := c.secret(env, logger)
	if err != nil {
		return nil, err
	}
	if c.Timeout <= 0 {
		return nil, Usagef("-http-timeout must be positive, not %v", c.Timeout)
	}
	opts := []proxmox.Option{proxmox.WithAPIToken(c.TokenID, secret), proxmox.WithTimeout(c.Timeout)}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, Usagef("CA file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, Usagef("CA file %s holds no PEM certificate", c.CAFile)
		}
		opts = append(opts, proxmox.WithCAPool(pool))
	}
	for _, fp := range c.Fingerprints {
		opts = append(opts, proxmox.WithFingerprint(fp))
	}
	if logger != nil {
		opts = append(opts, proxmox.WithLogger(logger))
	}
	opts = append(opts, extra...)
	client, err := proxmox.New(c.URL, opts...)
	if err != nil {
		return nil, Usagef("%v", err)
	}
	return client, nil
}

// secret returns the token secret from the environment or the secret file.
func (c *Conn) secret(env LookupEnv, logger *slog.Logger) (string, error) {
	fromEnv, inEnv := env(EnvTokenSecret)
	inEnv = inEnv && fromEnv != ""
	switch {
	case inEnv && c.SecretFile != "":
		return "", Usagef("the token secret is given twice, in %s and in a secret file: keep one", EnvTokenSecret)
	case inEnv:
		return strings.TrimSpace(fromEnv), nil
	case c.SecretFile == "":
		return "", Usagef("no API token secret: set %s, or name a file holding it with -token-secret-file or GUESTWARD_TOKEN_SECRET_FILE", EnvTokenSecret)
	}
	info, err := os.Stat(c.SecretFile)
	if err != nil {
		return "", Usagef("token secret file: %v", err)
	}
	if !info.Mode().IsRegular() {
		return "", Usagef("token secret file %s is not a regular file", c.SecretFile)
	}
	if info.Size() > 4096 {
		return "", Usagef("token secret file %s is %d bytes; a token secret is a UUID", c.SecretFile, info.Size())
	}
	if runtime.GOOS != "windows" && info.Mode().Perm()&0o077 != 0 && logger != nil {
		logger.Warn("the token secret file can be read by other users; chmod 600 it", "file", c.SecretFile, "mode", info.Mode().Perm().String())
	}
	b, err := os.ReadFile(c.SecretFile)
	if err != nil {
		return "", Usagef("token secret file: %v", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", Usagef("token secret file %s is empty", c.SecretFile)
	}
	return s, nil
}

// Probe asks Proxmox for its version, which needs valid credentials but no
// privilege: it proves that the URL, the certificate settings and the token
// are right before anything else is done. Its error explains the likely
// cause to a person.
func Probe(ctx context.Context, c *proxmox.Client, url string) (proxmox.VersionInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := c.Version(ctx)
	if err == nil {
		return v, nil
	}
	var certErr *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	switch {
	case errors.Is(err, proxmox.ErrUnauthorized):
		return v, fmt.Errorf("the Proxmox API at %s refused the token (check the token id and secret, and that the token has not expired): %w", url, err)
	case errors.As(err, &unknownCA), errors.As(err, &hostErr), errors.As(err, &certErr):
		return v, fmt.Errorf("cannot verify the certificate of %s: pin it with -fingerprint (the SHA-256 fingerprint the Proxmox GUI shows under node, System, Certificates) or trust its CA with -ca-file: %w", url, err)
	default:
		// A certificate that does not match a pinned fingerprint lands
		// here too: package proxmox does not classify it (its message
		// says so).
		return v, fmt.Errorf("cannot reach Proxmox at %s: %w", url, err)
	}
}
