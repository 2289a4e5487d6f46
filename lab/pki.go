package lab

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/caretaker/caretaker/internal/k3s"
)

// caPair is the signing half of a CA bundle: its first certificate and the
// first private key of its key file (after a rotation the key file holds
// the intermediate's key, then the root's).
type caPair struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func loadCAPair(certPEM, keyPEM []byte) (caPair, error) {
	certs, err := k3s.ParseCertsPEM(certPEM)
	if err != nil {
		return caPair{}, fmt.Errorf("parse CA certificate: %w", err)
	}
	key, err := firstPrivateKey(keyPEM)
	if err != nil {
		return caPair{}, fmt.Errorf("parse CA key: %w", err)
	}
	return caPair{cert: certs[0], key: key}, nil
}

func firstPrivateKey(keyPEM []byte) (crypto.Signer, error) {
	rest := keyPEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("no private key block")
		}
		switch b.Type {
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			return x509.ParsePKCS1PrivateKey(b.Bytes)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, err
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, errors.New("unsupported private key type")
			}
			return s, nil
		}
	}
}

// issueServing signs a fresh EC P-256 leaf for cn (organization org) with the given SANs. The
// returned certificate PEM holds the leaf followed by bundle (the CA chain
// K3s appends to its leaf files).
func (ca caPair) issueServing(cn string, org []string, ips []net.IP, dns []string, usage []x509.ExtKeyUsage, bundle []byte) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: org},
		NotBefore:    now.Add(-k3s.Backdate),
		NotAfter:     now.Add(k3s.LeafValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  usage,
		IPAddresses:  ips,
		DNSNames:     dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certPEM = append(certPEM, bundle...)
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	return certPEM, keyPEM, nil
}

// poolOf returns a pool holding every certificate of a PEM bundle.
func poolOf(bundle []byte) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(bundle)
	return p
}
