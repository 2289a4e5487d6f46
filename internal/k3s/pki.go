package k3s

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// PEM block types as K3s and openssl -traditional write them.
const (
	pemCertificate   = "CERTIFICATE"
	pemECPrivateKey  = "EC PRIVATE KEY"
	pemRSAPrivateKey = "RSA PRIVATE KEY"
	pemPrivateKey    = "PRIVATE KEY"
	pemPublicKey     = "PUBLIC KEY"
	pemRSAPublicKey  = "RSA PUBLIC KEY"
)

// newECKey makes an EC P-256 key and its SEC1 PEM ("EC PRIVATE KEY", 227
// bytes, as K3s and `openssl ecparam -genkey -noout` write it).
func newECKey() (*ecdsa.PrivateKey, []byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate EC key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return nil, nil, fmt.Errorf("marshal EC key: %w", err)
	}
	return k, pem.EncodeToMemory(&pem.Block{Type: pemECPrivateKey, Bytes: der}), nil
}

// newRSAKeyPEM makes an RSA-2048 key as PKCS#1 PEM ("RSA PRIVATE KEY"), the
// form of K3s's service.key and of `openssl genrsa -traditional`.
func newRSAKeyPEM() ([]byte, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate RSA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemRSAPrivateKey, Bytes: x509.MarshalPKCS1PrivateKey(k)}), nil
}

// randSerial returns a random positive 63-bit serial number.
func randSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 63))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// keyID is the RFC 5280 method-1 key identifier: SHA-1 of the
// subjectPublicKey bit string (what openssl's "hash" and Go compute).
func keyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, err
	}
	sum := sha1.Sum(spki.PublicKey.Bytes)
	return sum[:], nil
}

// caSpec describes a CA certificate to create.
type caSpec struct {
	cn        string
	notBefore time.Time
	notAfter  time.Time
	// selfAKI puts AKI == SKI on a self-signed cert, as openssl's
	// "authorityKeyIdentifier = keyid:always" does; K3s's own CAs have none.
	selfAKI bool
}

// createCA issues a CA cert for key, signed by parent/parentKey, or
// self-signed when parent is nil.
func createCA(spec caSpec, key crypto.Signer, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, error) {
	serial, err := randSerial()
	if err != nil {
		return nil, err
	}
	ski, err := keyID(key.Public())
	if err != nil {
		return nil, fmt.Errorf("CA %s: key id: %w", spec.cn, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: spec.cn},
		NotBefore:             spec.notBefore.UTC(),
		NotAfter:              spec.notAfter.UTC(),
		KeyUsage:              x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          ski,
	}
	signer := key
	if parent == nil {
		parent = tmpl
		if spec.selfAKI {
			tmpl.AuthorityKeyId = ski
		}
	} else {
		signer = parentKey
		tmpl.AuthorityKeyId = parent.SubjectKeyId // nil when the issuer has no SKI
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), signer)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate %s: %w", spec.cn, err)
	}
	return x509.ParseCertificate(der)
}

// encodeCert returns the PEM of one certificate.
func encodeCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: c.Raw})
}

// encodeCerts returns the PEM of several certificates, concatenated.
func encodeCerts(cs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range cs {
		out = append(out, encodeCert(c)...)
	}
	return out
}

// parsePrivateKeys returns every private key of a PEM file in order
// (EC, PKCS#1 RSA and PKCS#8 blocks); other blocks are skipped.
func parsePrivateKeys(data []byte) ([]crypto.Signer, error) {
	var keys []crypto.Signer
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		var (
			k   any
			err error
		)
		switch block.Type {
		case pemECPrivateKey:
			k, err = x509.ParseECPrivateKey(block.Bytes)
		case pemRSAPrivateKey:
			k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case pemPrivateKey:
			k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse private key %d (%s): %w", len(keys)+1, block.Type, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("private key %d is not a signing key", len(keys)+1)
		}
		keys = append(keys, s)
	}
	if len(keys) == 0 {
		return nil, errors.New("data does not contain a valid RSA or ECDSA private key")
	}
	return keys, nil
}

// parsePublicKeys returns the public keys of every key block of a PEM file
// in order: private keys contribute their public half; PUBLIC KEY and RSA
// PUBLIC KEY blocks count too (like k8s keyutil.PublicKeysFromFile).
func parsePublicKeys(data []byte) ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		switch block.Type {
		case pemECPrivateKey, pemRSAPrivateKey, pemPrivateKey:
			ks, err := parsePrivateKeys(pem.EncodeToMemory(block))
			if err != nil {
				return nil, err
			}
			keys = append(keys, ks[0].Public())
		case pemPublicKey:
			k, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse public key: %w", err)
			}
			keys = append(keys, k)
		case pemRSAPublicKey:
			k, err := x509.ParsePKCS1PublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse public key: %w", err)
			}
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("data does not contain any valid RSA or ECDSA public key")
	}
	return keys, nil
}

// samePublicKey compares two public keys.
func samePublicKey(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// marshalPrivateKey writes a key the way K3s writes service.current.key and
// leaf keys: PKCS#1 for RSA, SEC1 for EC.
func marshalPrivateKey(k crypto.Signer) ([]byte, error) {
	switch key := k.(type) {
	case *rsa.PrivateKey:
		return pem.EncodeToMemory(&pem.Block{Type: pemRSAPrivateKey, Bytes: x509.MarshalPKCS1PrivateKey(key)}), nil
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			return nil, err
		}
		return pem.EncodeToMemory(&pem.Block{Type: pemECPrivateKey, Bytes: der}), nil
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// caPair is a parsed CA: its bundle, the signing cert (bundle[0]) and the
// first key of its key file.
type caPair struct {
	bundlePEM []byte
	certs     []*x509.Certificate
	key       crypto.Signer
}

// loadCA parses a CA bundle and key file from a map keyed relative to SD.
func loadCA(files map[string][]byte, certPath, keyPath string) (caPair, error) {
	certPEM, ok := files[certPath]
	if !ok || len(certPEM) == 0 {
		return caPair{}, fmt.Errorf("CA certificate %s is missing", certPath)
	}
	certs, err := ParseCertsPEM(certPEM)
	if err != nil {
		return caPair{}, fmt.Errorf("CA certificate %s: %w", certPath, err)
	}
	keyPEM, ok := files[keyPath]
	if !ok || len(keyPEM) == 0 {
		return caPair{}, fmt.Errorf("CA key %s is missing", keyPath)
	}
	keys, err := parsePrivateKeys(keyPEM)
	if err != nil {
		return caPair{}, fmt.Errorf("CA key %s: %w", keyPath, err)
	}
	if !samePublicKey(certs[0].PublicKey, keys[0].Public()) {
		return caPair{}, fmt.Errorf("CA key %s does not match the first certificate of %s", keyPath, certPath)
	}
	return caPair{bundlePEM: certPEM, certs: certs, key: keys[0]}, nil
}

// cnOf is the subject CN of the first cert of a PEM bundle, or "".
func cnOf(pemData []byte) string {
	certs, err := ParseCertsPEM(pemData)
	if err != nil {
		return ""
	}
	return certs[0].Subject.CommonName
}

// typeSlug turns a CA type name into its CN part ("etcd/peer" → "etcd-peer").
func typeSlug(name string) string { return strings.ReplaceAll(name, "/", "-") }
