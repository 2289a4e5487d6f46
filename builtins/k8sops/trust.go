package k8sops

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/caretaker/caretaker/internal/k3s"
)

// Trust statuses of a bundle that holds a cluster root.
const (
	TrustOldOnly = "old root only" // trusts the previous root and not the current one: a finding
	TrustBoth    = "old and new"   // trusts both (fine while both are in use)
	TrustNew     = "new root"      // trusts the current root only
)

// Roots are the cluster's server CA roots a trust bundle is judged by.
type Roots struct {
	// Current is the root the servers' server-ca bundle chains to now, and
	// CurrentCerts the sha256 of every certificate of that bundle that is
	// not a previous root (a bundle holding the new intermediate trusts
	// the new root too).
	Current      string
	CurrentCerts map[string]bool
	// Previous are the roots rotated from: the other self-signed roots of
	// the current bundle (a cross-signed rotation keeps them) and the ones
	// given (a rotation to an unrelated root keeps none).
	Previous map[string]bool
	// Bundle is the current server CA bundle (PEM), what a refreshed trust
	// bundle gets.
	Bundle []byte
	// Planned is true when the servers do not hold the CA the run rotates
	// to yet (check mode): every root trusted now counts as previous, so
	// what trusts only them is what would be stale after the rotation.
	Planned bool
}

// PlannedRoots judges trust as it will be once the cluster has rotated
// away from every root of bundle (the server CA bundle now).
func PlannedRoots(bundle []byte) (*Roots, error) {
	br, err := k3s.RootsOf(bundle)
	if err != nil {
		return nil, fmt.Errorf("server CA bundle: %w", err)
	}
	r := &Roots{CurrentCerts: map[string]bool{}, Previous: map[string]bool{}, Bundle: bundle, Planned: true}
	certs, _ := k3s.ParseCertsPEM(bundle)
	for _, c := range certs {
		r.Previous[k3s.CertSHA256(c)] = true
	}
	for _, o := range append([]string{br.Current}, br.Others...) {
		if o != "" {
			r.Previous[o] = true
		}
	}
	return r, nil
}

// RootsFrom judges trust against the current server CA bundle and the
// roots given as previous ones (sha256 of their DER, e.g. the roots of the
// datastore's CA before a rotation).
func RootsFrom(bundle []byte, previous []string) (*Roots, error) {
	br, err := k3s.RootsOf(bundle)
	if err != nil {
		return nil, fmt.Errorf("server CA bundle: %w", err)
	}
	if br.Current == "" {
		return nil, fmt.Errorf("server CA bundle: its first certificate chains to no root it holds")
	}
	r := &Roots{Current: br.Current, CurrentCerts: map[string]bool{}, Previous: map[string]bool{}, Bundle: bundle}
	for _, p := range append(append([]string{}, br.Others...), previous...) {
		if p = strings.ToLower(strings.TrimSpace(p)); p != "" && p != br.Current {
			r.Previous[p] = true
		}
	}
	certs, _ := k3s.ParseCertsPEM(bundle)
	for _, c := range certs {
		if fp := k3s.CertSHA256(c); !r.Previous[fp] {
			r.CurrentCerts[fp] = true
		}
	}
	return r, nil
}

// Judge says how a PEM bundle trusts the cluster's roots: TrustOldOnly,
// TrustBoth, TrustNew, or "" when it holds no cluster CA at all (not the
// cluster's business) or does not parse.
func (r *Roots) Judge(bundle []byte) string {
	certs, err := k3s.ParseCertsPEM(bundle)
	if err != nil {
		return ""
	}
	var old, cur bool
	for _, c := range certs {
		fp := k3s.CertSHA256(c)
		old = old || r.Previous[fp]
		cur = cur || r.CurrentCerts[fp]
	}
	switch {
	case old && cur:
		return TrustBoth
	case old:
		return TrustOldOnly
	case cur:
		return TrustNew
	}
	return ""
}

// Merged is bundle with the current bundle's certificates it lacks
// appended: it trusts the current root and keeps trusting what it did
// (both CAs in the trust bundle, as Kubernetes' manual CA rotation does).
func (r *Roots) Merged(bundle []byte) []byte {
	have := map[string]bool{}
	certs, _ := k3s.ParseCertsPEM(bundle)
	for _, c := range certs {
		have[k3s.CertSHA256(c)] = true
	}
	out := strings.TrimRight(string(bundle), "\n") + "\n"
	cur, _ := k3s.ParseCertsPEM(r.Bundle)
	for _, c := range cur {
		if !have[k3s.CertSHA256(c)] {
			out += string(pemOf(c))
		}
	}
	return []byte(out)
}

// TrustItem is one trust bundle in the cluster's API objects.
type TrustItem struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Field is where the bundle is ("webhooks[name=x].clientConfig.caBundle").
	Field  string `json:"field"`
	Status string `json:"status"`
	// Fixed says what was done about it ("" when nothing).
	Fixed string `json:"fixed"`
	// path locates the bundle for a refresh; base64 says it is stored
	// base64-encoded (caBundle fields, Secret data).
	path   []string
	base64 bool
}

// TrustReport lists the trust bundles of the cluster's API objects that
// hold a cluster root: webhook configurations, APIServices, CRD
// conversion webhooks, service-account token Secrets and the
// kube-root-ca.crt ConfigMaps.
type TrustReport struct {
	Current string      `json:"current_root"`
	Items   []TrustItem `json:"items"`
	// OldOnly counts the items that trust only a previous root.
	OldOnly int    `json:"old_only"`
	Table   string `json:"table"`
	// Planned: judged as it will be after the rotation (check mode).
	Planned bool `json:"planned"`
}

// trustSource is one kind of object that carries trust bundles and how to
// find them in one object.
type trustSource struct {
	kind    string
	bundles func(u *unstructured.Unstructured) []TrustItem
}

var trustSources = []trustSource{
	{"validatingwebhookconfigurations", webhookBundles},
	{"mutatingwebhookconfigurations", webhookBundles},
	{"apiservices", apiServiceBundles},
	{"customresourcedefinitions", crdBundles},
	{"secrets", tokenSecretBundles},
	{"configmaps", rootCAConfigMapBundles},
}

// Trust reads every trust bundle of the cluster and judges it against
// roots. Read-only.
func (cl *Client) Trust(ctx context.Context, roots *Roots) (*TrustReport, error) {
	rep := &TrustReport{Current: roots.Current, Items: []TrustItem{}, Planned: roots.Planned}
	for _, src := range trustSources {
		k, err := cl.ResolveKind(src.kind)
		if err != nil {
			return nil, cl.errorf("%w", err)
		}
		items, err := cl.list(ctx, k, ListOptions{})
		if err != nil {
			return nil, err
		}
		for i := range items {
			for _, it := range src.bundles(&items[i]) {
				raw, ok := bundleAt(items[i].Object, it.path, it.base64)
				if !ok {
					continue
				}
				if it.Status = roots.Judge(raw); it.Status == "" {
					continue
				}
				it.Kind, it.Namespace, it.Name = k.String(), items[i].GetNamespace(), items[i].GetName()
				rep.Items = append(rep.Items, it)
				if it.Status == TrustOldOnly {
					rep.OldOnly++
				}
			}
		}
	}
	rep.Table = trustTable(rep.Items)
	return rep, nil
}

func webhookBundles(u *unstructured.Unstructured) []TrustItem {
	hooks, _, _ := unstructured.NestedSlice(u.Object, "webhooks")
	var out []TrustItem
	for _, h := range hooks {
		m, _ := h.(map[string]any)
		name, _ := m["name"].(string)
		out = append(out, TrustItem{Field: fmt.Sprintf("webhooks[name=%s].clientConfig.caBundle", name),
			path: []string{"webhooks", "name=" + name, "clientConfig", "caBundle"}, base64: true})
	}
	return out
}

func apiServiceBundles(*unstructured.Unstructured) []TrustItem {
	return []TrustItem{{Field: "spec.caBundle", path: []string{"spec", "caBundle"}, base64: true}}
}

func crdBundles(u *unstructured.Unstructured) []TrustItem {
	if s, _, _ := unstructured.NestedString(u.Object, "spec", "conversion", "strategy"); s != "Webhook" {
		return nil
	}
	p := []string{"spec", "conversion", "webhook", "clientConfig", "caBundle"}
	return []TrustItem{{Field: strings.Join(p, "."), path: p, base64: true}}
}

func tokenSecretBundles(u *unstructured.Unstructured) []TrustItem {
	if t, _, _ := unstructured.NestedString(u.Object, "type"); t != "kubernetes.io/service-account-token" {
		return nil
	}
	return []TrustItem{{Field: "data[ca.crt]", path: []string{"data", "ca.crt"}, base64: true}}
}

func rootCAConfigMapBundles(u *unstructured.Unstructured) []TrustItem {
	if u.GetName() != "kube-root-ca.crt" {
		return nil
	}
	return []TrustItem{{Field: "data[ca.crt]", path: []string{"data", "ca.crt"}}}
}

// bundleAt reads the bundle at path ("name=x" elements select a list
// item by name), decoding base64 where the field holds bytes.
func bundleAt(obj map[string]any, path []string, b64 bool) ([]byte, bool) {
	v, ok := walk(obj, path)
	s, _ := v.(string)
	if !ok || s == "" {
		return nil, false
	}
	if !b64 {
		return []byte(s), true
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	return raw, err == nil
}

// walk follows path through maps and named list items.
func walk(v any, path []string) (any, bool) {
	for _, p := range path {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[p]; !ok {
				return nil, false
			}
		case []any:
			name, isName := strings.CutPrefix(p, "name=")
			found := false
			for _, it := range x {
				if m, ok := it.(map[string]any); ok && isName && m["name"] == name {
					v, found = it, true
					break
				}
			}
			if !found {
				return nil, false
			}
		default:
			return nil, false
		}
	}
	return v, true
}

// trustTable renders the items as a table (items trusting only the old
// root first).
func trustTable(items []TrustItem) string {
	sorted := append([]TrustItem(nil), items...)
	sort.SliceStable(sorted, func(i, j int) bool {
		return (sorted[i].Status == TrustOldOnly) && (sorted[j].Status != TrustOldOnly)
	})
	var b strings.Builder
	fmt.Fprintf(&b, "%-14s %-40s %-52s %s\n", "TRUST", "OBJECT", "FIELD", "FIXED")
	for _, it := range sorted {
		fixed := it.Fixed
		if fixed == "" {
			fixed = "-"
		}
		fmt.Fprintf(&b, "%-14s %-40s %-52s %s\n", it.Status, it.Kind+" "+qualified(it.Namespace, it.Name), it.Field, fixed)
	}
	return strings.TrimRight(b.String(), "\n")
}

// pemOf encodes one certificate as PEM.
func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}
