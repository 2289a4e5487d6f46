package k3s

import (
	"errors"
	"net"
	"time"
)

// CAType names one of K3s's five CAs.
type CAType struct {
	// Name is the type as rotate-default-ca-certs.sh spells it: "client",
	// "server", "request-header", "etcd/peer", "etcd/server".
	Name string
	// CertKey and KeyKey are the bootstrap keys of its cert and key.
	CertKey, KeyKey string
	// CertPath and KeyPath are relative to SD.
	CertPath, KeyPath string
	// FirstStartPrefix is the CN prefix K3s gives the CA at first start
	// (CN "<prefix>-ca@<unix>"): "k3s-client", "etcd-peer", ...
	FirstStartPrefix string
}

// CATypes lists the CAs in the order rotate-default-ca-certs.sh handles them
// (k3s-ca-rotation.md §5 "Scripts").
var CATypes = []CAType{
	{Name: "client", CertKey: KeyClientCA, KeyKey: KeyClientCAKey, CertPath: PathClientCA, KeyPath: PathClientCAKey, FirstStartPrefix: "k3s-client"},
	{Name: "server", CertKey: KeyServerCA, KeyKey: KeyServerCAKey, CertPath: PathServerCA, KeyPath: PathServerCAKey, FirstStartPrefix: "k3s-server"},
	{Name: "request-header", CertKey: KeyRequestHeaderCA, KeyKey: KeyRequestHeaderCAKey, CertPath: PathRequestHeaderCA, KeyPath: PathRequestHeaderCAKey, FirstStartPrefix: "k3s-request-header"},
	{Name: "etcd/peer", CertKey: KeyETCDPeerCA, KeyKey: KeyETCDPeerCAKey, CertPath: PathETCDPeerCA, KeyPath: PathETCDPeerCAKey, FirstStartPrefix: "etcd-peer"},
	{Name: "etcd/server", CertKey: KeyETCDServerCA, KeyKey: KeyETCDServerCAKey, CertPath: PathETCDServerCA, KeyPath: PathETCDServerCAKey, FirstStartPrefix: "etcd-server"},
}

// Validity periods (golden files.txt header; k3s-ca-rotation.md §5, §6).
const (
	CAValidity           = 3650 * 24 * time.Hour // K3s self-signed CAs: 10 years
	LeafValidity         = 365 * 24 * time.Hour  // leaf certs: 1 year
	RotationCAValidity   = 7300 * 24 * time.Hour // rotate-default-ca-certs.sh: 20 years
	CustomLeafCAValidity = 3700 * 24 * time.Hour // generate-custom-ca-certs.sh leaf CAs and intermediate
	CertificateRenewDays = 120                   // leaf renewal window at start
	Backdate             = time.Hour             // K3s backdates certs by 1 h
)

// GenerateClusterCAs returns the CA set a K3s server creates at its first
// start, keyed by path relative to SD: tls/{server,client,request-header}-ca.{crt,key},
// tls/etcd/{server,peer}-ca.{crt,key} (self-signed EC P-256, CN
// "<prefix>-ca@<now.Unix()>", valid from now-1h for 10 years),
// tls/service.key (RSA 2048), cred/passwd (server and node users, both with
// serverPassword) and cred/ipsec.psk (k3s-ca-rotation.md §4; golden
// files.txt).
func GenerateClusterCAs(now time.Time, serverPassword string) (map[string][]byte, error) {
	return nil, errors.New("not implemented yet")
}

// PasswdFile renders SD/cred/passwd as K3s writes it: CSV lines
// "<pass>,<user>,<user>,<role>" for node (k3s:agent) and server
// (k3s:server) (k3s-ca-rotation.md §4).
func PasswdFile(serverPassword, nodePassword string) []byte {
	return nil
}

// LeafOptions describe the node the leaf certificates are issued for.
type LeafOptions struct {
	// NodeName is the node's name (CN of serving-kubelet, system:node:<name>).
	NodeName string
	// NodeIPs are the node's addresses, put in the serving certs' SANs.
	NodeIPs []net.IP
	// SANs are extra --tls-san names or IPs for kube-apiserver and etcd.
	SANs []string
	// ClusterDomain defaults to "cluster.local".
	ClusterDomain string
	// Now is the issue time; certs are valid from max(Now-1h, CA notBefore)
	// for one year.
	Now time.Time
	// Agent limits the set to the agent/ files (an agent node).
	Agent bool
}

// Leaf and derived file paths relative to the data dir DD (they span
// server/ and agent/).
const (
	AgentDir  = "agent"
	ServerDir = "server"
)

// IssueLeafCerts issues every leaf certificate and key of a server (or,
// with opts.Agent, of an agent) from the CA set cas (keyed relative to SD,
// as GenerateClusterCAs returns). The result is keyed relative to the data
// dir DD ("server/tls/client-admin.crt", "agent/client-kubelet.crt", ...)
// and includes the derived files K3s writes at each start:
// server/tls/{server,client}-ca.nochain.crt, server/tls/service.current.key,
// agent/server-ca.crt and agent/client-ca.crt. Each cert file holds the
// leaf followed by the whole CA bundle (golden files.txt).
func IssueLeafCerts(cas map[string][]byte, opts LeafOptions) (map[string][]byte, error) {
	return nil, errors.New("not implemented yet")
}

// RenewLeafCerts is what a server does at each start
// (k3s-ca-rotation.md §4 "Each server regenerates its own leaf certs"): for
// every leaf it reissues the cert when it is missing, within 120 days of
// expiry, its CN/O/SANs changed, or its AKI differs from the current CA[0]
// SKI; existing keys are kept. existing is keyed relative to DD. It returns
// the files to write (changed ones only, plus derived files whose content
// changed) and the DD-relative paths of the certs it reissued.
func RenewLeafCerts(cas, existing map[string][]byte, opts LeafOptions) (map[string][]byte, []string, error) {
	return nil, nil, errors.New("not implemented yet")
}

// GenerateRotation returns the staged CA set rotate-default-ca-certs.sh
// writes (k3s-ca-rotation.md §5 "Scripts"), keyed "tls/..." as the layout of
// a rotate-ca --path dir. For each CA type: the old root is the current
// <type>-ca.crt when it holds one cert, else its 2nd cert and the 2nd key of
// <type>-ca.key; a new EC P-256 root "k3s-<type>-root@<unix>" self-signed
// and cross-signed by the old root; a new intermediate "k3s-<type>-ca@<unix>"
// signed by the new root; <type>-ca.crt = intermediate, self-signed root,
// cross-signed root, old root; <type>-ca.key = intermediate key, root key.
// tls/service.key = a new RSA-2048 key followed by the current service.key.
// current is keyed relative to SD. The public pieces <type>-ca.pem,
// <type>-root-ssigned.pem, <type>-root-xsigned.pem, <type>-root-old.pem are
// included as the script leaves them.
func GenerateRotation(current map[string][]byte, now time.Time) (map[string][]byte, error) {
	return nil, errors.New("not implemented yet")
}

// GenerateCustomRotation is generate-custom-ca-certs.sh: leaf CAs (EC P-256,
// CN "k3s-<type>-ca@<unix>", 3700 days) signed by the intermediate, each
// <type>-ca.crt = leaf CA, intermediate, root; service.key = new RSA-2048
// plus the current key. When intermediateCertPEM is nil an intermediate is
// generated from the root (which then needs rootKeyPEM); when rootCertPEM is
// nil a new root is generated too (EC P-256, where the script uses RSA-4096,
// to stay fast). Output keyed "tls/..." like GenerateRotation, plus
// tls/root-ca.crt and tls/intermediate-ca.crt bundles.
func GenerateCustomRotation(current map[string][]byte, rootCertPEM, rootKeyPEM, intermediateCertPEM, intermediateKeyPEM []byte, now time.Time) (map[string][]byte, error) {
	return nil, errors.New("not implemented yet")
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
// keys: ". It verifies at the current time, as K3s does.
func ValidateCARotation(current, staged map[string][]byte) []error {
	return []error{errors.New("not implemented yet")}
}

// CertStatus is one certificate as `k3s certificate check` reports it; the
// JSON field names are K3s's (golden certificate-check.json).
type CertStatus struct {
	Filename     string
	Subject      string
	Issuer       string
	Usages       []string
	ExpiryTime   time.Time
	ResidualTime time.Duration
	Status       string
}

// Certificate statuses (k3s-ca-rotation.md §6).
const (
	StatusOK          = "OK"
	StatusWarning     = "WARNING"
	StatusExpired     = "EXPIRED"
	StatusNotYetValid = "NOT YET VALID"
)

// CheckCertificates lists every certificate of every file (bundles
// expanded) like `k3s certificate check`: files maps a path to PEM bytes
// and is walked in sorted path order; Filename is the base name. A cert is
// NOT YET VALID before notBefore (ExpiryTime is then notBefore), EXPIRED
// after notAfter, WARNING when notAfter is within warnWithin, else OK.
// Files without certificates are skipped, as K3s does.
func CheckCertificates(files map[string][]byte, now time.Time, warnWithin time.Duration) []CertStatus {
	return nil
}

// FormatCheckTable renders statuses as `k3s certificate check --output
// table` does (golden certificate-check-table.txt), relative to now.
func FormatCheckTable(certs []CertStatus, now time.Time) string {
	return ""
}

// FormatCheckJSON renders statuses as `--output json`: one line
// {"Certificates":[...]} and a newline.
func FormatCheckJSON(certs []CertStatus) ([]byte, error) {
	return nil, errors.New("not implemented yet")
}

// CAFingerprint identifies a CA bundle on disk: the sha256 of the file
// bytes and the subject CN of its first cert.
type CAFingerprint struct {
	SHA256  string
	Subject string
	Certs   int
}

// CAFingerprints fingerprints a CA bundle (used by facts and verify).
func CAFingerprints(bundle []byte) (CAFingerprint, error) {
	return CAFingerprint{}, errors.New("not implemented yet")
}
