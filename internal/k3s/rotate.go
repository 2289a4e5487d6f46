package k3s

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"time"
)

// RotationPathPrefix is the directory prefix of the staged files: a map
// returned by GenerateRotation is written under a dir D as D/tls/..., and D
// is passed to `k3s certificate rotate-ca --path D` (k3s-ca-rotation.md §5).
const RotationPathPrefix = "tls/"

// GenerateRotation returns the staged CA set rotate-default-ca-certs.sh
// writes (k3s-ca-rotation.md §5 "Scripts"), keyed "tls/..." as the layout of
// a rotate-ca --path dir. For each CA type: the old root is the current
// <type>-ca.crt when it holds one cert, else its 2nd cert and the 2nd key of
// <type>-ca.key (a repeated rotation); a new EC P-256 root
// "k3s-<type>-root@<unix>" self-signed (AKI = SKI, as openssl writes it) and
// cross-signed by the old root; a new intermediate "k3s-<type>-ca@<unix>"
// signed by the new root, all valid from now for 7300 days;
// <type>-ca.crt = intermediate, self-signed root, cross-signed root, old
// root; <type>-ca.key = intermediate key, root key. tls/service.key = a new
// RSA-2048 key followed by the current service.key. current is keyed
// relative to SD. The public pieces the script leaves beside them
// (<type>-ca.pem, <type>-root-ssigned.pem, <type>-root-xsigned.pem,
// <type>-root-old.pem) are included; the loose private keys are not.
func GenerateRotation(current map[string][]byte, now time.Time) (map[string][]byte, error) {
	out := map[string][]byte{}
	ts := now.Unix()
	for _, t := range CATypes {
		oldCert, oldKey, err := oldRoot(current, t)
		if err != nil {
			return nil, err
		}
		slug := typeSlug(t.Name)
		rootKey, rootKeyPEM, err := newECKey()
		if err != nil {
			return nil, err
		}
		rootSpec := caSpec{cn: fmt.Sprintf("k3s-%s-root@%d", slug, ts), notBefore: now, notAfter: now.Add(RotationCAValidity), selfAKI: true}
		ssigned, err := createCA(rootSpec, rootKey, nil, nil)
		if err != nil {
			return nil, err
		}
		xsigned, err := createCA(rootSpec, rootKey, oldCert, oldKey)
		if err != nil {
			return nil, err
		}
		interKey, interKeyPEM, err := newECKey()
		if err != nil {
			return nil, err
		}
		inter, err := createCA(caSpec{cn: fmt.Sprintf("k3s-%s-ca@%d", slug, ts), notBefore: now, notAfter: now.Add(RotationCAValidity)}, interKey, ssigned, rootKey)
		if err != nil {
			return nil, err
		}
		base := RotationPathPrefix + t.Name
		out[t.CertPath] = encodeCerts(inter, ssigned, xsigned, oldCert)
		out[t.KeyPath] = append(append([]byte{}, interKeyPEM...), rootKeyPEM...)
		out[base+"-ca.pem"] = encodeCert(inter)
		out[base+"-root-ssigned.pem"] = encodeCert(ssigned)
		out[base+"-root-xsigned.pem"] = encodeCert(xsigned)
		out[base+"-root-old.pem"] = encodeCert(oldCert)
	}
	svc, err := newServiceKeyBundle(current, false)
	if err != nil {
		return nil, err
	}
	out[PathServiceKey] = svc
	return out, nil
}

// oldRoot picks the root the script cross-signs with: the only cert of a
// one-cert bundle, else the 2nd cert and the 2nd key.
func oldRoot(current map[string][]byte, t CAType) (*x509.Certificate, crypto.Signer, error) {
	certPEM := current[t.CertPath]
	if len(certPEM) == 0 {
		return nil, nil, fmt.Errorf("generate rotation: current %s CA cert %s does not exist; cannot continue", t.Name, t.CertPath)
	}
	certs, err := ParseCertsPEM(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("generate rotation: current %s CA cert %s: %w", t.Name, t.CertPath, err)
	}
	keyPEM := current[t.KeyPath]
	if len(keyPEM) == 0 {
		return nil, nil, fmt.Errorf("generate rotation: current %s CA key %s does not exist; cannot continue", t.Name, t.KeyPath)
	}
	keys, err := parsePrivateKeys(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("generate rotation: current %s CA key %s: %w", t.Name, t.KeyPath, err)
	}
	idx := 0
	if len(certs) > 1 {
		idx = 1
	}
	if len(keys) <= idx {
		return nil, nil, fmt.Errorf("generate rotation: %s holds %d certs but %s only %d key(s); the old root key is missing", t.CertPath, len(certs), t.KeyPath, len(keys))
	}
	if !samePublicKey(certs[idx].PublicKey, keys[idx].Public()) {
		return nil, nil, fmt.Errorf("generate rotation: key %d of %s does not match cert %d of %s; cannot cross-sign", idx+1, t.KeyPath, idx+1, t.CertPath)
	}
	return certs[idx], keys[idx], nil
}

// newServiceKeyBundle is a new RSA-2048 key followed by the current
// service.key (required unless optional).
func newServiceKeyBundle(current map[string][]byte, optional bool) ([]byte, error) {
	old := current[PathServiceKey]
	if len(old) == 0 && !optional {
		return nil, fmt.Errorf("generate rotation: current service account key %s does not exist; cannot continue", PathServiceKey)
	}
	svc, err := newRSAKeyPEM()
	if err != nil {
		return nil, err
	}
	svc = append(svc, old...)
	if len(old) > 0 && old[len(old)-1] != '\n' {
		svc = append(svc, '\n')
	}
	return svc, nil
}

// GenerateCustomRotation is generate-custom-ca-certs.sh
// (k3s-ca-rotation.md §5 "Scripts"): leaf CAs (EC P-256, CN
// "k3s-<type>-ca@<unix>", 3700 days) signed by the intermediate, each
// <type>-ca.crt = leaf CA, intermediate, root and <type>-ca.key = the leaf
// CA key; service.key = new RSA-2048 plus the current key if any. When
// intermediateCertPEM is nil an intermediate "k3s-intermediate-ca@<unix>"
// (3700 days) is generated from the root, which then needs rootKeyPEM; when
// rootCertPEM is nil a root "k3s-root-ca@<unix>" (7300 days) is generated
// too, as EC P-256 where the script uses RSA-4096, to stay fast. Output is
// keyed "tls/..." like GenerateRotation, plus tls/root-ca.crt (root) and
// tls/intermediate-ca.crt (intermediate + root); the root and intermediate
// keys are included (tls/root-ca.key, tls/intermediate-ca.key) only when
// generated here. Renewing under an existing root keeps the token CA hash.
func GenerateCustomRotation(current map[string][]byte, rootCertPEM, rootKeyPEM, intermediateCertPEM, intermediateKeyPEM []byte, now time.Time) (map[string][]byte, error) {
	out := map[string][]byte{}
	ts := now.Unix()
	var (
		root    *x509.Certificate
		rootKey crypto.Signer
	)
	if len(rootKeyPEM) > 0 {
		ks, err := parsePrivateKeys(rootKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("custom CA: root key: %w", err)
		}
		rootKey = ks[0]
	}
	if len(rootCertPEM) > 0 {
		cs, err := ParseCertsPEM(rootCertPEM)
		if err != nil {
			return nil, fmt.Errorf("custom CA: root certificate: %w", err)
		}
		root = cs[0]
		if rootKey != nil && !samePublicKey(root.PublicKey, rootKey.Public()) {
			return nil, errors.New("custom CA: the root key does not match the root certificate")
		}
	} else {
		k, kp, err := newECKey()
		if err != nil {
			return nil, err
		}
		root, err = createCA(caSpec{cn: fmt.Sprintf("k3s-root-ca@%d", ts), notBefore: now, notAfter: now.Add(RotationCAValidity), selfAKI: true}, k, nil, nil)
		if err != nil {
			return nil, err
		}
		rootKey = k
		out[RotationPathPrefix+"root-ca.key"] = kp
	}
	var (
		inter    *x509.Certificate
		interKey crypto.Signer
	)
	if len(intermediateKeyPEM) > 0 {
		ks, err := parsePrivateKeys(intermediateKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("custom CA: intermediate key: %w", err)
		}
		interKey = ks[0]
	}
	if len(intermediateCertPEM) > 0 {
		cs, err := ParseCertsPEM(intermediateCertPEM)
		if err != nil {
			return nil, fmt.Errorf("custom CA: intermediate certificate: %w", err)
		}
		inter = cs[0]
		if err := inter.CheckSignatureFrom(root); err != nil {
			return nil, fmt.Errorf("custom CA: the intermediate certificate is not signed by the root: %w", err)
		}
	} else {
		if rootKey == nil {
			return nil, errors.New("custom CA: cannot generate intermediate certificate without root certificate private key")
		}
		k, kp, err := newECKey()
		if err != nil {
			return nil, err
		}
		inter, err = createCA(caSpec{cn: fmt.Sprintf("k3s-intermediate-ca@%d", ts), notBefore: now, notAfter: now.Add(CustomLeafCAValidity)}, k, root, rootKey)
		if err != nil {
			return nil, err
		}
		interKey = k
		out[RotationPathPrefix+"intermediate-ca.key"] = kp
	}
	if interKey == nil {
		return nil, errors.New("custom CA: cannot generate leaf certificates without intermediate certificate private key")
	}
	if !samePublicKey(inter.PublicKey, interKey.Public()) {
		return nil, errors.New("custom CA: the intermediate key does not match the intermediate certificate")
	}
	for _, t := range CATypes {
		k, kp, err := newECKey()
		if err != nil {
			return nil, err
		}
		leaf, err := createCA(caSpec{cn: fmt.Sprintf("k3s-%s-ca@%d", typeSlug(t.Name), ts), notBefore: now, notAfter: now.Add(CustomLeafCAValidity)}, k, inter, interKey)
		if err != nil {
			return nil, err
		}
		out[t.CertPath] = encodeCerts(leaf, inter, root)
		out[t.KeyPath] = kp
		out[RotationPathPrefix+t.Name+"-ca.pem"] = encodeCert(leaf)
	}
	out[RotationPathPrefix+"root-ca.pem"] = encodeCert(root)
	out[RotationPathPrefix+"root-ca.crt"] = encodeCert(root)
	out[RotationPathPrefix+"intermediate-ca.pem"] = encodeCert(inter)
	out[RotationPathPrefix+"intermediate-ca.crt"] = encodeCerts(inter, root)
	svc, err := newServiceKeyBundle(current, true)
	if err != nil {
		return nil, err
	}
	out[PathServiceKey] = svc
	return out, nil
}

// ValidateCARotation is the rotate-ca handler's validation
// (k3s-ca-rotation.md §5 "Handler"; pkg/server/handlers/cert.go). current
// and staged are keyed relative to SD / the --path dir. A rotatable file
// absent or empty in staged keeps the current one and is not validated. For
// each staged *CA: more than one cert, certs[0] verifies against the old
// chain, and cert and key load as a pair; for service.key the first current
// key must be in the new file. Errors are in K3s's field order and wording
// ("ServerCA: new CA bundle contains only a single certificate but should
// include root or intermediate CA certificates"); errors.Join of the result
// is the handler's message after "failed to validate new CA certificates and
// keys: " (golden logs-e-rotate-ca-refusals.txt). It verifies at the current
// time, as K3s does; ValidateCARotationAt takes the time.
func ValidateCARotation(current, staged map[string][]byte) []error {
	return ValidateCARotationAt(current, staged, time.Now())
}

// ValidateCARotationAt is ValidateCARotation at a given time.
func ValidateCARotationAt(current, staged map[string][]byte, now time.Time) []error {
	var errs []error
	has := func(p string) bool { return len(staged[p]) > 0 }
	pick := func(p string) []byte {
		if has(p) {
			return staged[p]
		}
		return current[p]
	}
	for _, f := range BootstrapFiles {
		if !f.Rotate {
			continue
		}
		switch {
		case strings.HasSuffix(f.Key, "CA"):
			keyFile, _ := BootstrapFileByKey(f.Key + "Key")
			if has(f.Path) {
				if err := validateCA(current[f.Path], staged[f.Path], now); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", f.Key, err))
				}
			}
			if has(f.Path) || has(keyFile.Path) {
				if _, err := tls.X509KeyPair(pick(f.Path), pick(keyFile.Path)); err != nil {
					errs = append(errs, fmt.Errorf("%s: new CA cert and key cannot be loaded as X590KeyPair: %w", keyFile.Key, err))
				}
			}
		case f.Key == KeyServiceKey && has(f.Path):
			if err := validateServiceKey(current[f.Path], staged[f.Path]); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", f.Key, err))
			}
		}
	}
	return errs
}

// validateCA is K3s's validateCA for one staged bundle.
func validateCA(oldPEM, newPEM []byte, now time.Time) error {
	oldCerts, err := ParseCertsPEM(oldPEM)
	if err != nil {
		return err
	}
	newCerts, err := ParseCertsPEM(newPEM)
	if err != nil {
		return err
	}
	if len(newCerts) == 1 {
		return errors.New("new CA bundle contains only a single certificate but should include root or intermediate CA certificates")
	}
	roots := x509.NewCertPool()
	inters := x509.NewCertPool()
	for _, c := range oldCerts {
		if isRootLike(c) {
			roots.AddCert(c)
		} else {
			inters.AddCert(c)
		}
	}
	for _, c := range newCerts[1:] {
		if len(c.AuthorityKeyId) > 0 {
			inters.AddCert(c)
		}
	}
	if _, err := newCerts[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now}); err != nil {
		return fmt.Errorf("new CA cert cannot be verified using old CA chain: %w", err)
	}
	return nil
}

// validateServiceKey checks that the first old public key is in the new file.
func validateServiceKey(oldPEM, newPEM []byte) error {
	oldKeys, err := parsePublicKeys(oldPEM)
	if err != nil {
		return err
	}
	newKeys, err := parsePublicKeys(newPEM)
	if err != nil {
		return err
	}
	for _, k := range newKeys {
		if samePublicKey(oldKeys[0], k) {
			return nil
		}
	}
	return errors.New("old ServiceAccount signing key not in new ServiceAccount key list")
}

// MergeRotation applies the handler's defaulting (k3s-ca-rotation.md §5
// step 2): every key not tagged for rotation, or absent or empty in staged,
// takes the current entry. It returns the new bootstrap data and the
// "Using current data for <Key>: <path>" lines K3s logs, with paths
// relative to SD (callers join them with their SD; optional keys that are
// absent log an empty path, as in golden logs-b-rotate-ca.txt).
func MergeRotation(current, staged BootstrapData) (BootstrapData, []string) {
	out := BootstrapData{}
	var logs []string
	for _, f := range BootstrapFiles {
		s, ok := staged[f.Key]
		if f.Rotate && ok && len(s.Content) > 0 {
			out[f.Key] = s
			continue
		}
		p := f.Path
		if c, ok := current[f.Key]; ok {
			out[f.Key] = c
		} else if f.Optional {
			p = ""
		}
		logs = append(logs, fmt.Sprintf("Using current data for %s: %s", f.Key, p))
	}
	return out, logs
}

// StagedFiles returns the entries of a GenerateRotation or
// GenerateCustomRotation result that `rotate-ca --path` reads (the
// bootstrap files), keyed relative to the --path dir.
func StagedFiles(staged map[string][]byte) map[string][]byte {
	out := map[string][]byte{}
	for _, f := range BootstrapFiles {
		if d, ok := staged[f.Path]; ok && f.Rotate {
			out[f.Path] = d
		}
	}
	return out
}
