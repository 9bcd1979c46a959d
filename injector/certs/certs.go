// Package certs gives the webhook its serving certificate, in one of two
// modes:
//
//   - files: read a certificate and key mounted from a Secret that
//     something else (cert-manager) issues and renews, and pick up each
//     renewal from disk;
//   - self-signed: keep a CA and a serving certificate in a Secret of the
//     injector's namespace (created if absent with optimistic concurrency,
//     so several replicas agree without leader election), renew the
//     serving certificate before it expires, and keep the CA bundle in the
//     MutatingWebhookConfiguration, named, up to date.
//
// Either way the server takes its certificate from Reloader.GetCertificate
// on every handshake, so a renewal needs no restart and drops no
// connection.
package certs

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// Reloader serves the current certificate to a tls.Config.
type Reloader struct {
	cert atomic.Pointer[tls.Certificate]
}

// GetCertificate implements tls.Config.GetCertificate.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := r.cert.Load()
	if c == nil {
		return nil, errors.New("certs: no serving certificate yet")
	}
	return c, nil
}

// Loaded reports whether a certificate is in place.
func (r *Reloader) Loaded() bool { return r.cert.Load() != nil }

// Set replaces the certificate from PEM.
func (r *Reloader) Set(certPEM, keyPEM []byte) error {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("certs: serving certificate: %w", err)
	}
	r.cert.Store(&c)
	return nil
}

// TLSConfig is a server config taking its certificate from r.
func (r *Reloader) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: r.GetCertificate}
}

// WatchFiles loads certFile and keyFile into r, then re-reads them every
// interval until ctx ends, swapping in a changed pair. A pair that fails
// to load (a renewal caught half-written) keeps the previous one.
func WatchFiles(ctx context.Context, r *Reloader, certFile, keyFile string, interval time.Duration, onError func(error)) error {
	var last []byte
	load := func() error {
		c, err := os.ReadFile(certFile)
		if err != nil {
			return fmt.Errorf("certs: %w", err)
		}
		k, err := os.ReadFile(keyFile)
		if err != nil {
			return fmt.Errorf("certs: %w", err)
		}
		both := append(append([]byte{}, c...), k...)
		if bytes.Equal(both, last) {
			return nil
		}
		if err := r.Set(c, k); err != nil {
			return err
		}
		last = both
		return nil
	}
	if err := load(); err != nil {
		return err
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := load(); err != nil && onError != nil {
				onError(err)
			}
		}
	}
}

// Lifetimes of what the self-signed mode issues.
const (
	CALifetime      = 10 * 365 * 24 * time.Hour
	ServingLifetime = 365 * 24 * time.Hour
	// RenewBefore: a serving certificate is replaced this long before it
	// expires, a CA a year before (its successor is trusted alongside it
	// until then, so no client sees a certificate it does not trust).
	RenewBefore   = 30 * 24 * time.Hour
	caRenewBefore = 365 * 24 * time.Hour
)

// Bundle is the self-signed mode's material, PEM.
type Bundle struct {
	CAs     []byte // every CA certificate clients should trust, newest first
	CAKey   []byte // the newest CA's key
	Cert    []byte // serving certificate
	Key     []byte
	caCert  *x509.Certificate
	serving *x509.Certificate
}

// parseBundle reads and checks b's certificates.
func parseBundle(b Bundle) (Bundle, error) {
	cas, err := parseCerts(b.CAs)
	if err != nil || len(cas) == 0 {
		return b, fmt.Errorf("CA certificates: %v", err)
	}
	serving, err := parseCerts(b.Cert)
	if err != nil || len(serving) != 1 {
		return b, fmt.Errorf("serving certificate: %v", err)
	}
	if _, err := tls.X509KeyPair(b.Cert, b.Key); err != nil {
		return b, fmt.Errorf("serving key pair: %w", err)
	}
	b.caCert, b.serving = cas[0], serving[0]
	return b, nil
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			return out, nil
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
}

// renew returns b brought up to date for hosts at now: a new CA when the
// newest is due (older ones kept while valid), a new serving certificate
// when it is due, was signed by another CA, or does not cover hosts.
// changed is false when b is fine as it is.
func renew(b *Bundle, hosts []string, now time.Time) (next Bundle, changed bool, err error) {
	var cur Bundle
	if b != nil {
		cur, err = parseBundle(*b)
		if err != nil {
			b = nil // unreadable: start over
		}
	}
	next = cur
	if b == nil || cur.caCert.NotAfter.Sub(now) < caRenewBefore {
		caPEM, keyPEM, err := newCA(now)
		if err != nil {
			return Bundle{}, false, err
		}
		next.CAs = append(caPEM, keepValid(cur.CAs, now)...)
		next.CAKey = keyPEM
		next.Cert = nil
		changed = true
	}
	if !changed && cur.serving.NotAfter.Sub(now) >= RenewBefore && covers(cur.serving, hosts) && cur.serving.CheckSignatureFrom(cur.caCert) == nil {
		return cur, false, nil
	}
	next.Cert, next.Key, err = newServing(next.CAs, next.CAKey, hosts, now)
	if err != nil {
		return Bundle{}, false, err
	}
	next, err = parseBundle(next)
	return next, true, err
}

// keepValid returns the PEM certificates in data not yet expired at now.
func keepValid(data []byte, now time.Time) []byte {
	certs, _ := parseCerts(data)
	var out []byte
	for _, c := range certs {
		if now.Before(c.NotAfter) {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
		}
	}
	return out
}

func covers(c *x509.Certificate, hosts []string) bool {
	for _, h := range hosts {
		if c.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func newKey() (*ecdsa.PrivateKey, []byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	return k, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func serial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

func newCA(now time.Time) (certPEM, keyPEM []byte, err error) {
	k, keyPEM, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	tpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "tollgate-injector-ca " + now.UTC().Format("2006-01-02T15:04:05Z")},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &k.PublicKey, k)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: CA: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// newServing issues a serving certificate for hosts (DNS names or IPs)
// from the first CA in casPEM.
func newServing(casPEM, caKeyPEM []byte, hosts []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	cas, err := parseCerts(casPEM)
	if err != nil || len(cas) == 0 {
		return nil, nil, fmt.Errorf("certs: CA: %v", err)
	}
	kb, _ := pem.Decode(caKeyPEM)
	if kb == nil {
		return nil, nil, errors.New("certs: CA key is not PEM")
	}
	caKey, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: CA key: %w", err)
	}
	k, keyPEM, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	tpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: hosts[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(ServingLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tpl.IPAddresses = append(tpl.IPAddresses, ip)
		} else {
			tpl.DNSNames = append(tpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, cas[0], &k.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("certs: serving certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}
