package k3s

import "testing"

func TestParseVersion(t *testing.T) {
	cases := []struct {
		in   string
		want Version
		str  string
	}{
		{"v1.30.10+k3s1", Version{1, 30, 10, "", "k3s1"}, "v1.30.10+k3s1"},
		{"1.32.3+k3s1", Version{1, 32, 3, "", "k3s1"}, "v1.32.3+k3s1"},
		{"v1.29.15-rc1+k3s1", Version{1, 29, 15, "rc1", "k3s1"}, "v1.29.15-rc1+k3s1"},
		{"k3s version v1.36.2+k3slab.af977adf (af977adf)\ngo version go1.24\n", Version{1, 36, 2, "", "k3slab.af977adf"}, "v1.36.2+k3slab.af977adf"},
		{"  v1.28.4  ", Version{1, 28, 4, "", ""}, "v1.28.4"},
	}
	for _, c := range cases {
		got, err := ParseVersion(c.in)
		if err != nil {
			t.Fatalf("ParseVersion(%q): %v", c.in, err)
		}
		if got != c.want {
			t.Errorf("ParseVersion(%q) = %+v, want %+v", c.in, got, c.want)
		}
		if got.String() != c.str {
			t.Errorf("String() = %q, want %q", got.String(), c.str)
		}
	}
	for _, bad := range []string{"", "v1.30", "v1.x.3", "k3s", "v1.30.-1"} {
		if _, err := ParseVersion(bad); err == nil {
			t.Errorf("ParseVersion(%q): want error", bad)
		}
	}
}

func TestNeedsServerWorkaroundBoundaries(t *testing.T) {
	cases := map[string]bool{
		"v1.24.17+k3s1": true,
		"v1.28.0+k3s1":  true,
		"v1.28.15+k3s1": true,
		"v1.28.99+k3s1": true,
		"v1.29.0+k3s1":  true,
		"v1.29.14+k3s1": true,
		"v1.29.15+k3s1": false,
		"v1.29.16+k3s1": false,
		"v1.30.10+k3s1": true,
		"v1.30.11+k3s1": false,
		"v1.30.12+k3s2": false,
		"v1.31.6+k3s1":  true,
		"v1.31.7+k3s1":  false,
		"v1.32.2+k3s1":  true,
		"v1.32.3+k3s1":  false,
		"v1.32.10+k3s1": false,
		"v1.33.0+k3s1":  false,
		"v1.36.2+k3s1":  false,
		"v2.0.0+k3s1":   false,
		"v0.9.1":        true,
	}
	for s, want := range cases {
		v := MustParseVersion(s)
		if got := NeedsServerWorkaround(v); got != want {
			t.Errorf("NeedsServerWorkaround(%s) = %v, want %v", s, got, want)
		}
		if got := ServesBootstrapFromDatastore(v); got == want {
			t.Errorf("ServesBootstrapFromDatastore(%s) = %v, want %v", s, got, !want)
		}
	}
}

func TestVersionLess(t *testing.T) {
	order := []string{"v1.28.9", "v1.29.0", "v1.29.15-rc1+k3s1", "v1.29.15+k3s1", "v1.30.1", "v2.0.0"}
	for i := 0; i+1 < len(order); i++ {
		a, b := MustParseVersion(order[i]), MustParseVersion(order[i+1])
		if !a.Less(b) || b.Less(a) {
			t.Errorf("want %s < %s", a, b)
		}
	}
}

// The renewal window by release: the May 2025 patch releases moved it from
// 90 to 120 days (PR #12232 and its backports).
func TestRenewDays(t *testing.T) {
	for v, want := range map[string]int{
		"v1.29.15+k3s1": 90, "v1.30.12+k3s1": 90, "v1.30.13+k3s1": 120, "v1.30.14+k3s1": 120,
		"v1.31.8+k3s1": 90, "v1.31.9+k3s1": 120, "v1.32.4+k3s1": 90, "v1.32.5-rc1+k3s1": 120, "v1.32.5+k3s1": 120,
		"v1.33.0+k3s1": 90, "v1.33.1+k3s1": 120, "v1.34.0+k3s1": 120, "v1.36.3+k3s-af977adf-dirty": 120, "v1.28.15+k3s1": 90,
	} {
		if got := RenewDays(MustParseVersion(v)); got != want {
			t.Errorf("RenewDays(%s) = %d, want %d", v, got, want)
		}
	}
}
