package cli

import (
	"crypto/x509"
	"os"
)

// CertPool reads the PEM certificates of the file at path, which the flag
// named flag gave, into a new pool. An unreadable file, or one that holds
// no certificate, is a usage error naming the flag.
func CertPool(flag, path string) (*x509.CertPool, error) {
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		return nil, Usagef("-%s: %v", flag, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, Usagef("-%s %s holds no PEM certificate", flag, path)
	}
	return pool, nil
}
