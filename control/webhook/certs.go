package webhook

import (
	"bytes"
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
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Keys of the Secret that holds the webhook's certificates: a kubernetes.io/tls Secret, plus the CA.
const (
	keyCert     = corev1.TLSCertKey       // the serving certificate
	keyKey      = corev1.TLSPrivateKeyKey // its key
	keyCABundle = "ca.crt"                // the CAs the API server must trust: the caBundle
	keyCAKey    = "ca.key"                // the key of the first of them, which signs serving certificates
)

// Lifetimes of what the controller issues. Both are renewed once two thirds of their lifetime has
// passed, as cert-manager does by default; the serving certificate is short enough that a leaked key
// does not serve for long, the CA long enough that the caBundle seldom changes.
const (
	caLifetime      = 10 * 365 * 24 * time.Hour
	servingLifetime = 365 * 24 * time.Hour
	// backdate covers clocks of the API server that run behind the controller's.
	backdate = time.Hour
)

// keyPair is a certificate with its key, parsed.
type keyPair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte // the certificate, PEM
}

// bundle is what the Secret holds, parsed.
type bundle struct {
	ca      keyPair
	serving keyPair
	// caBundle is the PEM of every CA to trust: the signing CA and, after it was renewed, the one
	// before it while it is still valid, so that API servers that trust the old one keep working
	// until the caBundle is patched.
	caBundle []byte
	tls      *tls.Certificate
}

// names are what a serving certificate must be for.
type names struct {
	dns []string
	ips []net.IP
}

func (n names) covers(c *x509.Certificate) bool {
	for _, d := range n.dns {
		if !slices.Contains(c.DNSNames, d) {
			return false
		}
	}
	for _, ip := range n.ips {
		if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

// due reports whether a certificate should be replaced at now: two thirds of its lifetime are over.
func due(c *x509.Certificate, now time.Time) bool {
	lifetime := c.NotAfter.Sub(c.NotBefore)
	return !now.Before(c.NotBefore.Add(lifetime * 2 / 3))
}

// renewAt is when a certificate becomes due.
func renewAt(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * 2 / 3)
}

// parseSecret reads the certificates of a Secret, checking that they belong together.
func parseSecret(data map[string][]byte) (*bundle, error) {
	ca, err := parsePair(data[keyCABundle], data[keyCAKey])
	if err != nil {
		return nil, fmt.Errorf("%s and %s: %w", keyCABundle, keyCAKey, err)
	}
	if !ca.cert.IsCA {
		return nil, fmt.Errorf("%s: the first certificate is not a CA", keyCABundle)
	}
	serving, err := parsePair(data[keyCert], data[keyKey])
	if err != nil {
		return nil, fmt.Errorf("%s and %s: %w", keyCert, keyKey, err)
	}
	if err := serving.cert.CheckSignatureFrom(ca.cert); err != nil {
		return nil, fmt.Errorf("%s is not signed by the CA of %s: %w", keyCert, keyCABundle, err)
	}
	tc, err := tls.X509KeyPair(data[keyCert], data[keyKey])
	if err != nil {
		return nil, fmt.Errorf("%s and %s: %w", keyCert, keyKey, err)
	}
	return &bundle{ca: ca, serving: serving, caBundle: data[keyCABundle], tls: &tc}, nil
}

// parsePair reads the first certificate of certPEM and an EC private key, and checks they match.
func parsePair(certPEM, keyPEM []byte) (keyPair, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return keyPair{}, errors.New("no PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return keyPair{}, err
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return keyPair{}, errors.New("no PEM key")
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return keyPair{}, err
	}
	if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(&key.PublicKey) {
		return keyPair{}, errors.New("the key does not match the certificate")
	}
	return keyPair{cert: cert, key: key, pem: pem.EncodeToMemory(block)}, nil
}

// issue returns the Secret data for a serving certificate for n, signed by the CA of old when old has
// a CA that is not due, else by a new CA (the old one staying in the caBundle while it is valid).
func issue(old *bundle, n names, now time.Time) (map[string][]byte, error) {
	var ca keyPair
	var previous []byte
	switch {
	case old != nil && !due(old.ca.cert, now):
		ca = old.ca
		previous = validCerts(bytes.TrimPrefix(old.caBundle, old.ca.pem), now)
	default:
		var err error
		if ca, err = newCA(now); err != nil {
			return nil, err
		}
		if old != nil && now.Before(old.ca.cert.NotAfter) {
			previous = old.ca.pem
		}
	}
	serving, err := newServing(ca, n, now)
	if err != nil {
		return nil, err
	}
	caKey, err := marshalKey(ca.key)
	if err != nil {
		return nil, err
	}
	key, err := marshalKey(serving.key)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		keyCert:     serving.pem,
		keyKey:      key,
		keyCABundle: append(slices.Clip(ca.pem), previous...),
		keyCAKey:    caKey,
	}, nil
}

// validCerts keeps the PEM certificates of data that have not expired at now.
func validCerts(data []byte, now time.Time) []byte {
	var out []byte
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return out
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil && now.Before(c.NotAfter) {
			out = append(out, pem.EncodeToMemory(block)...)
		}
	}
}

func newCA(now time.Time) (keyPair, error) {
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "meltemi-webhook-ca", Organization: []string{"Meltemi"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	return sign(tmpl, nil)
}

func newServing(ca keyPair, n names, now time.Time) (keyPair, error) {
	cn := "meltemi-webhook"
	if len(n.dns) > 0 {
		cn = n.dns[0]
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: cn, Organization: []string{"Meltemi"}},
		DNSNames:    n.dns,
		IPAddresses: n.ips,
		NotBefore:   now.Add(-backdate),
		// A serving certificate never outlives the CA that signed it.
		NotAfter:    minTime(now.Add(servingLifetime), ca.cert.NotAfter),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	return sign(tmpl, &ca)
}

// sign makes a key and a certificate from tmpl, signed by parent, or by itself when parent is nil.
func sign(tmpl *x509.Certificate, parent *keyPair) (keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return keyPair{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return keyPair{}, err
	}
	tmpl.SerialNumber = serial
	issuer, signer := tmpl, key
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	if err != nil {
		return keyPair{}, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return keyPair{}, err
	}
	return keyPair{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

func marshalKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
