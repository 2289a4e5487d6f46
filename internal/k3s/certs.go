package k3s

import (
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
	CertificateRenewDays = 120                   // leaf renewal window at start (RenewDays: releases since May 2025)
	Backdate             = time.Hour             // K3s backdates certs by 1 h
)

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
	// Age, for tests and the lab, issues the certificates as if that long
	// ago: valid from Now-Age for a year (on a cluster whose CAs are older
	// than that; the CA's notBefore does not hold them back). A leaf then
	// expires within K3s's renewal window after 365 days minus the window.
	Age time.Duration
	// RenewDays is the renewal window of the node's release (RenewDays):
	// an existing leaf expiring within it is reissued; 0 means
	// CertificateRenewDays.
	RenewDays int
}

// Leaf and derived file paths relative to the data dir DD (they span
// server/ and agent/).
const (
	AgentDir  = "agent"
	ServerDir = "server"
)

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
	// Serial (upper-case hex, as openssl prints it) and IsCA are not in
	// K3s's output; they tell a renewed certificate from an unchanged one
	// when K3s keeps its dates (a leaf's notBefore is max(now - 1h, the
	// CA's notBefore)).
	Serial string `json:"-"`
	IsCA   bool   `json:"-"`
}

// Certificate statuses (k3s-ca-rotation.md §6).
const (
	StatusOK          = "OK"
	StatusWarning     = "WARNING"
	StatusExpired     = "EXPIRED"
	StatusNotYetValid = "NOT YET VALID"
	// StatusRenewsAtRestart is caretaker's own (K3s says WARNING): a leaf
	// within its release's renewal window that K3s reissues at its next
	// start, expiring later than the warning window (CaretakerStatus).
	StatusRenewsAtRestart = "RENEWS-AT-RESTART"
)

// CAFingerprint identifies a CA bundle on disk: the sha256 of the file
// bytes and the subject CN of its first cert.
type CAFingerprint struct {
	SHA256  string
	Subject string
	Certs   int
	// Roots are the CertSHA256 of the bundle's self-signed roots, the one
	// its first certificate chains to first.
	Roots []string
}
