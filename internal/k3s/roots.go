package k3s

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
)

// CertSHA256 is the sha256 of a certificate's DER, in hex: how caretaker
// names one certificate of a bundle.
func CertSHA256(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// BundleRoots are the self-signed roots of a CA bundle: the root its first
// certificate chains to (Current: what the bundle's holder trusts first,
// the root K3s's CA hash names) and every other self-signed root it holds
// (Others: after a cross-signed rotation, the roots it was rotated from).
// Fingerprints are CertSHA256.
type BundleRoots struct {
	Current string
	Others  []string
}

// RootsOf finds the roots of a CA bundle. A bundle whose first
// certificate chains to no root it holds has no Current root.
func RootsOf(bundlePEM []byte) (BundleRoots, error) {
	certs, err := ParseCertsPEM(bundlePEM)
	if err != nil {
		return BundleRoots{}, err
	}
	var r BundleRoots
	roots := x509.NewCertPool()
	inters := x509.NewCertPool()
	for _, c := range certs {
		if selfSigned(c) {
			roots.AddCert(c)
		} else {
			inters.AddCert(c)
		}
	}
	if chains, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil && len(chains) > 0 {
		chain := chains[0]
		r.Current = CertSHA256(chain[len(chain)-1])
	}
	for _, c := range certs {
		if fp := CertSHA256(c); selfSigned(c) && fp != r.Current {
			r.Others = append(r.Others, fp)
		}
	}
	return r, nil
}

// selfSigned reports whether c is a root: root-like in K3s's sense (no
// AKI, or AKI equal to SKI) and signed by its own key.
func selfSigned(c *x509.Certificate) bool {
	return isRootLike(c) && bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}
