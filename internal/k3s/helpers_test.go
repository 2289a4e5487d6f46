package k3s

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"testing"
	"time"
)

// testCert is a CA made directly with crypto/x509 for tests, independent of
// the package's own generators.
type testCert struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	keyPEM  []byte
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func ski(k *ecdsa.PrivateKey) []byte {
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	s := sha1.Sum(pub)
	return s[:]
}

func sign(t *testing.T, tmpl *x509.Certificate, pub *ecdsa.PublicKey, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(t *testing.T, k *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

func caTemplate(cn string, k *ecdsa.PrivateKey) *x509.Certificate {
	now := time.Now()
	return &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour * 365),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          ski(k),
		AuthorityKeyId:        ski(k),
	}
}

// testCA is a self-signed root with AKI == SKI.
func testCA(t *testing.T, cn string) testCert {
	t.Helper()
	k := newKey(t)
	tmpl := caTemplate(cn, k)
	c := sign(t, tmpl, &k.PublicKey, tmpl, k)
	return testCert{cert: c, key: k, certPEM: certPEM(c), keyPEM: keyPEM(t, k)}
}

// testSubCA is a CA signed by parent.
func testSubCA(t *testing.T, cn string, parent testCert) testCert {
	t.Helper()
	k := newKey(t)
	tmpl := caTemplate(cn, k)
	tmpl.AuthorityKeyId = nil
	c := sign(t, tmpl, &k.PublicKey, parent.cert, parent.key)
	return testCert{cert: c, key: k, certPEM: certPEM(c), keyPEM: keyPEM(t, k)}
}

// crossSign re-issues ca's subject and key signed by by.
func crossSign(t *testing.T, ca, by testCert) []byte {
	t.Helper()
	tmpl := caTemplate(ca.cert.Subject.CommonName, ca.key)
	tmpl.AuthorityKeyId = nil
	c := sign(t, tmpl, &ca.key.PublicKey, by.cert, by.key)
	return certPEM(c)
}

func joinPEM(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}
