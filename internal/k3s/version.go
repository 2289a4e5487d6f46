package k3s

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a K3s release version such as v1.30.10+k3s1.
type Version struct {
	Major, Minor, Patch int
	// Pre is the pre-release part without the dash ("rc1"), if any.
	Pre string
	// Build is the build metadata without the plus ("k3s1"), if any.
	Build string
}

// ParseVersion parses a K3s version string: "v1.30.10+k3s1", "1.30.10+k3s1",
// "v1.29.15-rc1+k3s1". It also accepts the first line printed by
// `k3s --version` ("k3s version v1.30.10+k3s1 (abcdef12)").
func ParseVersion(s string) (Version, error) {
	orig := s
	s = strings.TrimSpace(s)
	if line, _, ok := strings.Cut(s, "\n"); ok {
		s = strings.TrimSpace(line)
	}
	// `k3s --version`: "k3s version v1.30.10+k3s1 (abcdef12)"
	if strings.HasPrefix(s, "k3s version ") {
		s = strings.TrimPrefix(s, "k3s version ")
		if f := strings.Fields(s); len(f) > 0 {
			s = f[0]
		}
	}
	s = strings.TrimPrefix(s, "v")
	var v Version
	if core, build, ok := strings.Cut(s, "+"); ok {
		s, v.Build = core, build
	}
	if core, pre, ok := strings.Cut(s, "-"); ok {
		s, v.Pre = core, pre
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return Version{}, fmt.Errorf("parse k3s version %q: want vMAJOR.MINOR.PATCH[+k3sN]", orig)
	}
	nums := make([]int, 3)
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return Version{}, fmt.Errorf("parse k3s version %q: %q is not a number", orig, p)
		}
		nums[i] = n
	}
	v.Major, v.Minor, v.Patch = nums[0], nums[1], nums[2]
	return v, nil
}

// MustParseVersion is ParseVersion for constants in tests and tables; it
// panics on a malformed version.
func MustParseVersion(s string) Version {
	v, err := ParseVersion(s)
	if err != nil {
		panic(err)
	}
	return v
}

// String renders the version as K3s prints it, e.g. "v1.30.10+k3s1".
func (v Version) String() string {
	s := fmt.Sprintf("v%d.%d.%d", v.Major, v.Minor, v.Patch)
	if v.Pre != "" {
		s += "-" + v.Pre
	}
	if v.Build != "" {
		s += "+" + v.Build
	}
	return s
}

// Less reports whether v sorts before w: major, minor, patch, then a
// pre-release before its release. Build metadata is ignored.
func (v Version) Less(w Version) bool {
	if v.Major != w.Major {
		return v.Major < w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor < w.Minor
	}
	if v.Patch != w.Patch {
		return v.Patch < w.Patch
	}
	if (v.Pre == "") != (w.Pre == "") {
		return v.Pre != ""
	}
	return v.Pre < w.Pre
}

// fixedPatch is the first patch release of each affected minor that carries
// PR #11844 (k3s-ca-rotation.md §1 "Fixed releases").
var fixedPatch = map[int]int{29: 15, 30: 11, 31: 7, 32: 3}

// NeedsServerWorkaround reports whether v has the HA bootstrap bug
// k3s-io/k3s#11233: servers joined with --server reconcile from their peer's
// disk instead of the datastore, so a rotated CA never arrives unless
// `server` is removed while they restart. Fixed in v1.29.15, v1.30.11,
// v1.31.7, v1.32.3 and every 1.33 and later; every 1.28 and older is buggy
// (k3s-ca-rotation.md §1 "A version gate for the tool").
func NeedsServerWorkaround(v Version) bool {
	if v.Major != 1 {
		return v.Major < 1
	}
	if v.Minor <= 28 {
		return true
	}
	if p, ok := fixedPatch[v.Minor]; ok {
		return v.Patch < p
	}
	return false // 1.33 and later carry the fix from main
}

// ServesBootstrapFromDatastore reports whether a server of version v answers
// /v1-k3s/server-bootstrap from the datastore (fixed releases) rather than
// from its own disk (k3s-ca-rotation.md §1 "What the fix changed").
func ServesBootstrapFromDatastore(v Version) bool { return !NeedsServerWorkaround(v) }

// LegacyCertificateRenewDays is the leaf renewal window of releases before
// the May 2025 patch releases (CertificateRenewDays after them).
const LegacyCertificateRenewDays = 90

// renew120Patch is the first patch release of each minor whose leaf
// renewal window is 120 days: K3s PR #12232 ("Update certification renew
// alert to 120 days", pkg/daemons/config CertificateRenewDays 90 -> 120,
// merged 2025-05-02, first in v1.33.1) and its backports #12312 (1.33),
// #12313 (1.32), the 1.31 one and #12315 (1.30), released in v1.33.1+k3s1,
// v1.32.5+k3s1, v1.31.9+k3s1 and v1.30.13+k3s1 (the K3s docs' version gate
// for the window). 1.29 and older had no backport.
var renew120Patch = map[int]int{30: 13, 31: 9, 32: 5, 33: 1}

// RenewDays is the leaf certificate renewal window of release v: K3s
// reissues a leaf (client and serving certificates on servers; the
// dynamic listener's certificate) at start when it expires within that
// many days, and `k3s certificate check` calls such a certificate WARNING.
// 120 days on v1.30.13, v1.31.9, v1.32.5, v1.33.1 and later patches of
// their minors, and on 1.34 and later; 90 before. CAs are not renewed at
// start. (Agents request their certificates from a server at every start,
// whatever their expiry.)
func RenewDays(v Version) int {
	if v.Major != 1 {
		if v.Major > 1 {
			return CertificateRenewDays
		}
		return LegacyCertificateRenewDays
	}
	if v.Minor >= 34 {
		return CertificateRenewDays
	}
	if p, ok := renew120Patch[v.Minor]; ok && v.Patch >= p {
		return CertificateRenewDays
	}
	return LegacyCertificateRenewDays
}
