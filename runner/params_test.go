package runner_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caretaker/caretaker/internal/runtest"
	"github.com/caretaker/caretaker/runner"
	"github.com/caretaker/caretaker/runner/errs"
)

func TestParams(t *testing.T) {
	f := runtest.NewFixture(t)
	src := `
mode = param("mode", "auto", choices=["auto", "always", "never"])
force = param("force", False)
count = param("count", 3)
names = param("names", [])
def show(node):
    log("mode=%s force=%s count=%d names=%s" % (mode, force, count, names))
step("show", show, nodes="s1", mutates=False)
`
	plan, err := f.Load(src, map[string]string{"mode": "never", "force": "true", "count": "7", "names": "a, b"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Run(plan, runner.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	out := strings.Join(f.Output(runner.StreamLog), "\n")
	if !strings.Contains(out, `mode=never force=True count=7 names=["a", "b"]`) {
		t.Errorf("params not typed by their defaults: %s", out)
	}
	for _, tc := range []struct {
		params map[string]string
		want   []string
	}{
		{map[string]string{"mod": "x"}, []string{`unknown parameter "mod"`, "mode (auto|always|never)", "force (bool, default False)"}},
		{map[string]string{"force": "perhaps"}, []string{`-p force=perhaps`, "not a boolean", "true or false"}},
		{map[string]string{"count": "many"}, []string{`-p count=many`, "not an integer"}},
		{map[string]string{"mode": "sometimes"}, []string{`"sometimes" is not allowed`, "auto, always, never"}},
	} {
		_, err := f.Load(src, tc.params, "")
		if err == nil || !errors.Is(err, errs.ErrBadInput) {
			t.Errorf("params %v: err = %v, want a bad-input error", tc.params, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("params %v: error %q does not mention %q", tc.params, err, w)
			}
		}
	}
}

// TestTypedParams: typed parameters refuse a bad value when the playbook
// loads, naming the parameter, the value, what it accepts and where it is
// declared; file values become absolute paths; a bad default is the
// playbook's error.
func TestTypedParams(t *testing.T) {
	f := runtest.NewFixture(t)
	dir := t.TempDir()
	certFile, notPEM := filepath.Join(dir, "root.crt"), filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(certFile, testCertPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(notPEM, []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	src := `
timeout = param("timeout", "3m", type = "duration", min = "10s", max = "1h")
root = param("root", "", type = "pem-cert")
notes = param("notes", "", type = "file")
days = param("days", 30, min = 0, max = 365)
def show(node):
    log("timeout=%s root=%s notes=%s days=%d" % (timeout, root, notes, days))
step("show", show, nodes="s1", mutates=False)
`
	plan, err := f.Load(src, map[string]string{"timeout": "90s", "root": certFile, "notes": notPEM, "days": "0"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Run(plan, runner.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	if out := strings.Join(f.Output(runner.StreamLog), "\n"); !strings.Contains(out, "timeout=90s root="+certFile+" notes="+notPEM+" days=0") {
		t.Errorf("typed values: %s", out)
	}
	for _, tc := range []struct {
		params map[string]string
		want   []string
	}{
		{map[string]string{"timeout": "banana"}, []string{"-p timeout=banana", `"banana" is not a duration`, "a duration such as 90s", "pb.star:2:"}},
		{map[string]string{"timeout": "1s"}, []string{"-p timeout=1s", "below the minimum 10s"}},
		{map[string]string{"timeout": "2h"}, []string{"above the maximum 1h"}},
		{map[string]string{"root": filepath.Join(dir, "missing.crt")}, []string{"-p root=", "missing.crt does not exist", "a PEM certificate file"}},
		{map[string]string{"root": notPEM}, []string{"notes.txt holds no PEM certificate"}},
		{map[string]string{"root": dir}, []string{"is not a regular file"}},
		{map[string]string{"notes": filepath.Join(dir, "nope")}, []string{"nope does not exist"}},
		{map[string]string{"days": "-1"}, []string{"-p days=-1", "below the minimum 0"}},
	} {
		_, err := f.Load(src, tc.params, "")
		if err == nil || !errors.Is(err, errs.ErrBadInput) {
			t.Errorf("params %v: err = %v, want a bad-input error", tc.params, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("params %v: error %q does not mention %q", tc.params, err, w)
			}
		}
	}
	for _, bad := range []string{
		`x = param("x", "banana", type = "duration")`,
		`x = param("x", "", type = "colour")`,
		`x = param("x", "a", min = 1)`,
	} {
		if _, err := f.Load(bad+"\nstep(\"s\", lambda n: None, nodes=\"s1\")\n", nil, ""); err == nil {
			t.Errorf("%s: loaded, want an error", bad)
		}
	}
}

// testCertPEM is a self-signed certificate in PEM.
func testCertPEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-root"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestParamHint: a builtin refusing a value that came from an untyped
// parameter says which parameter to change.
func TestParamHint(t *testing.T) {
	f := runtest.NewFixture(t)
	src := `
pause = param("pause", "1s")
def wait(node):
    sleep(pause)
step("wait", wait, nodes="s1", mutates=False)
`
	plan, err := f.Load(src, map[string]string{"pause": "banana"}, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Run(plan, runner.RunOptions{})
	if err == nil {
		t.Fatal("the run passed; want sleep to refuse banana")
	}
	var msgs []string
	for _, e := range f.Events() {
		if d, ok := e.(runner.StepDone); ok && d.Error != "" {
			msgs = append(msgs, d.Error)
		}
	}
	msg := strings.Join(msgs, "\n")
	for _, want := range []string{`"banana" is not a duration`, "the value of parameter pause, -p pause=banana", "give another with -p pause=..."} {
		if !strings.Contains(msg, want) {
			t.Errorf("step error %q lacks %q", msg, want)
		}
	}
}
