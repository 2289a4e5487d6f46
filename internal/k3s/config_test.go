package k3s

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

const (
	unitPath = "/etc/systemd/system/k3s.service"
	envPath  = "/etc/systemd/system/k3s.service.env"
	cfgPath  = "/etc/rancher/k3s/config.yaml"
)

func TestWriteUnitLayoutAndParse(t *testing.T) {
	u := WriteUnit("server", []string{"--server", "https://vip:6443", "--node-label", "it's=x%y"}, envPath)
	s := string(u)
	want := "ExecStart=/usr/local/bin/k3s \\\n    server \\\n\t'--server' \\\n\t'https://vip:6443' \\\n\t'--node-label' \\\n\t'it'\\''s=x%y' \\\n\n"
	if !strings.HasSuffix(s, want) {
		t.Errorf("unit tail:\n%q\nwant suffix\n%q", s[len(s)-120:], want)
	}
	for _, l := range []string{"EnvironmentFile=-/etc/default/%N\n", "EnvironmentFile=-/etc/sysconfig/%N\n", "EnvironmentFile=-" + envPath + "\n", "[Service]\nType=notify\n"} {
		if !strings.Contains(s, l) {
			t.Errorf("unit lacks %q", l)
		}
	}
	args, err := ParseUnitArgs(u)
	if err != nil {
		t.Fatal(err)
	}
	var vals []string
	for _, a := range args {
		vals = append(vals, a.Value)
	}
	if got := strings.Join(vals, "|"); got != "/usr/local/bin/k3s|server|--server|https://vip:6443|--node-label|it's=x%y" {
		t.Errorf("argv = %s", got)
	}
	if args[2].Raw != "'--server'" || args[3].Line != args[2].Line+1 || string(u[args[3].Start:args[3].End]) != "'https://vip:6443'" {
		t.Errorf("positions: %+v %+v", args[2], args[3])
	}
	if files := UnitEnvironmentFiles(u, "k3s"); strings.Join(files, ",") != "/etc/default/k3s,/etc/sysconfig/k3s,"+envPath {
		t.Errorf("env files %v", files)
	}
	// No args: the subcommand line keeps its backslash and a blank line follows.
	if !strings.HasSuffix(string(WriteUnit("agent", nil, envPath)), "ExecStart=/usr/local/bin/k3s \\\n    agent \\\n\n") {
		t.Error("no-arg layout")
	}
}

func TestParseUnitArgsQuoting(t *testing.T) {
	u := []byte("[Service]\nExecStart=-/usr/local/bin/k3s server \"--token=a b\\\"c\" --x='y z' 100%%\nExecStart=\nExecStart=/bin/k3s agent\n")
	args, err := ParseUnitArgs(u)
	if err != nil {
		t.Fatal(err)
	}
	if len(args) != 2 || args[0].Value != "/bin/k3s" {
		t.Errorf("reset then last ExecStart: %+v", args)
	}
	dirs, _, err := parseUnit(u)
	if err != nil {
		t.Fatal(err)
	}
	w := dirs[0].words
	if w[0].Value != "-/usr/local/bin/k3s" || w[2].Value != `--token=a b"c` || w[3].Value != "--x=y z" || w[4].Value != "100%" {
		t.Errorf("words: %+v", w)
	}
	if _, err := ParseUnitArgs([]byte("[Service]\nExecStart=/k3s 'open\n")); err == nil {
		t.Error("want error for unterminated quote")
	}
	if args, err := ParseUnitArgs([]byte("[Unit]\nDescription=x\n")); err != nil || args != nil {
		t.Errorf("no ExecStart: %v %v", args, err)
	}
}

func eff(t *testing.T, src Sources) map[string]Setting {
	t.Helper()
	m, err := Effective(src)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestEffectivePrecedence(t *testing.T) {
	unitWith := WriteUnit("server", []string{"--server", "https://unit:6443"}, envPath)
	unitWithout := WriteUnit("server", []string{"--disable-agent"}, envPath)
	env := NamedFile{Path: envPath, Data: []byte("K3S_TOKEN='secret'\nK3S_URL='https://env:6443'\n")}
	cfg := []byte("token: secret\nserver: https://config:6443\n")
	drop := NamedFile{Path: cfgPath + ".d/20-b.yaml", Data: []byte("server: https://dropin:6443\n")}
	earlier := NamedFile{Path: cfgPath + ".d/10-a.yml", Data: []byte("server: https://earlier:6443\n")}
	ignored := NamedFile{Path: cfgPath + ".d/99-z.conf", Data: []byte("server: https://ignored:6443\n")}
	empty := NamedFile{Path: cfgPath + ".d/zz-no-server.yaml", Data: []byte("server: \"\"\n")}

	cases := []struct {
		name      string
		src       Sources
		val, kind string
		source    string
		line      int
	}{
		{"env only", Sources{Unit: unitWithout, UnitPath: unitPath, EnvFiles: []NamedFile{env}}, "https://env:6443", KindEnv, envPath, 2},
		{"config over env", Sources{Unit: unitWithout, UnitPath: unitPath, Config: cfg, ConfigPath: cfgPath, EnvFiles: []NamedFile{env}}, "https://config:6443", KindConfig, cfgPath, 2},
		{"drop-ins in lexical order over config", Sources{Unit: unitWithout, UnitPath: unitPath, Config: cfg, ConfigPath: cfgPath, DropIns: []NamedFile{ignored, drop, earlier}}, "https://dropin:6443", KindDropIn, drop.Path, 1},
		{"unit arg over everything", Sources{Unit: unitWith, UnitPath: unitPath, Config: cfg, ConfigPath: cfgPath, DropIns: []NamedFile{drop}, EnvFiles: []NamedFile{env}}, "https://unit:6443", KindUnitArg, unitPath, 0},
		{"empty drop-in overrides config and env", Sources{Unit: unitWithout, UnitPath: unitPath, Config: cfg, ConfigPath: cfgPath, DropIns: []NamedFile{empty}, EnvFiles: []NamedFile{env}}, "", KindDropIn, empty.Path, 1},
		{"empty drop-in cannot override a unit arg", Sources{Unit: unitWith, UnitPath: unitPath, DropIns: []NamedFile{empty}}, "https://unit:6443", KindUnitArg, unitPath, 0},
	}
	for _, c := range cases {
		m := eff(t, c.src)
		s, ok := m["server"]
		if !ok || s.Value != c.val || s.Kind != c.kind || s.Source != c.source || (c.line != 0 && s.Line != c.line) {
			t.Errorf("%s: server = %+v", c.name, s)
		}
	}
	m := eff(t, Sources{Unit: unitWith, UnitPath: unitPath, Config: cfg, ConfigPath: cfgPath, EnvFiles: []NamedFile{env}})
	if len(m["server"].Shadowed) != 2 || m["server"].Shadowed[0].Kind != KindConfig || m["server"].Shadowed[1].Value != "https://env:6443" {
		t.Errorf("shadowed = %+v", m["server"].Shadowed)
	}
	if m["token"].Value != "secret" || m["token"].Kind != KindConfig {
		t.Errorf("token = %+v", m["token"])
	}
	if m["disable-agent"].Value != "" {
		t.Errorf("disable-agent should not be set here: %+v", m["disable-agent"])
	}
}

func TestEffectiveUnitArgForms(t *testing.T) {
	forms := map[string]string{
		"--server URL":   "[Service]\nExecStart=/usr/local/bin/k3s server --server https://a:6443 --cluster-init\n",
		"--server=URL":   "[Service]\nExecStart=/usr/local/bin/k3s server --server=https://a:6443 --cluster-init\n",
		"-s URL":         "[Service]\nExecStart=/usr/local/bin/k3s server -s https://a:6443 --cluster-init\n",
		"-server=URL":    "[Service]\nExecStart=/usr/local/bin/k3s server -server=https://a:6443 --cluster-init\n",
		"install.sh":     string(WriteUnit("server", []string{"--cluster-init", "--server", "https://a:6443"}, envPath)),
		"global flag":    "[Service]\nExecStart=/usr/local/bin/k3s --debug server \\\n  --cluster-init \\\n  -s \\\n  https://a:6443\n",
		"value on split": "[Service]\nExecStart=/usr/local/bin/k3s \\\n    server \\\n\t'--cluster-init' \\\n\t'-s' \\\n\t# a comment inside\n\t'https://a:6443' \\\n\n",
	}
	for name, u := range forms {
		m := eff(t, Sources{Unit: []byte(u), UnitPath: unitPath})
		if m["server"].Value != "https://a:6443" || m["server"].Kind != KindUnitArg {
			t.Errorf("%s: server = %+v", name, m["server"])
		}
		if m["cluster-init"].Value != "true" {
			t.Errorf("%s: cluster-init = %+v", name, m["cluster-init"])
		}
	}
	m := eff(t, Sources{Unit: []byte(forms["install.sh"]), UnitPath: unitPath})
	lines := strings.Split(forms["install.sh"], "\n")
	if l := lines[m["server"].Line-1]; l != "\t'--server' \\" {
		t.Errorf("line %d is %q", m["server"].Line, l)
	}
}

func TestEffectiveEnvAndAppend(t *testing.T) {
	u := []byte("[Service]\nEnvironment=\"K3S_URL=https://unitenv:6443\" K3S_DATA_DIR=/data\nEnvironmentFile=-/etc/default/k3s\nExecStart=/usr/local/bin/k3s server\n")
	env := NamedFile{Path: "/etc/default/k3s", Data: []byte("# comment\nexport K3S_URL=\"https://file:6443\"\nK3S_CLUSTER_INIT=true\nOTHER=1\n")}
	m := eff(t, Sources{Unit: u, UnitPath: unitPath, EnvFiles: []NamedFile{env}})
	if m["server"].Value != "https://file:6443" || m["server"].Kind != KindEnv || m["server"].Line != 2 {
		t.Errorf("EnvironmentFile must override Environment=: %+v", m["server"])
	}
	if m["data-dir"].Value != "/data" || m["data-dir"].Kind != KindUnitEnv {
		t.Errorf("data-dir = %+v", m["data-dir"])
	}
	if m["cluster-init"].Value != "true" {
		t.Errorf("cluster-init = %+v", m["cluster-init"])
	}
	if _, ok := m["OTHER"]; ok {
		t.Error("non-K3S variables are not flags")
	}
	cfg := []byte("disable:\n  - traefik\ncluster-init: true\nwrite-kubeconfig-mode: \"0600\"\n")
	drop := NamedFile{Path: cfgPath + ".d/a.yaml", Data: []byte("disable+: [servicelb]\n")}
	m = eff(t, Sources{Config: cfg, ConfigPath: cfgPath, DropIns: []NamedFile{drop}})
	if strings.Join(m["disable"].Values, ",") != "traefik,servicelb" || m["disable"].Source != drop.Path {
		t.Errorf("disable = %+v", m["disable"])
	}
	if m["cluster-init"].Value != "true" || m["write-kubeconfig-mode"].Value != "0600" {
		t.Errorf("scalars: %+v %+v", m["cluster-init"], m["write-kubeconfig-mode"])
	}
	_, err := Effective(Sources{Config: cfg, ConfigPath: cfgPath, EnvFiles: []NamedFile{{Path: envPath, Data: []byte("K3S_CONFIG_FILE=/other.yaml\n")}}})
	if !errors.Is(err, ErrConfigPathMismatch) {
		t.Errorf("config path mismatch: %v", err)
	}
	if _, err := Effective(Sources{Config: []byte("- a\n- b\n"), ConfigPath: cfgPath}); err == nil || !strings.Contains(err.Error(), cfgPath) {
		t.Errorf("bad config: %v", err)
	}
}

// apply returns the sources after the edits.
func apply(src Sources, edits []Edit) Sources {
	set := func(p string, b []byte) []byte {
		for _, e := range edits {
			if e.Path == p {
				return e.After
			}
		}
		return b
	}
	out := src
	out.Unit = set(src.UnitPath, src.Unit)
	out.Config = set(src.ConfigPath, src.Config)
	out.DropIns = nil
	for _, d := range src.DropIns {
		out.DropIns = append(out.DropIns, NamedFile{Path: d.Path, Data: set(d.Path, d.Data)})
	}
	out.EnvFiles = nil
	for _, d := range src.EnvFiles {
		out.EnvFiles = append(out.EnvFiles, NamedFile{Path: d.Path, Data: set(d.Path, d.Data)})
	}
	out.UnitDropIns = nil
	for _, d := range src.UnitDropIns {
		out.UnitDropIns = append(out.UnitDropIns, NamedFile{Path: d.Path, Data: set(d.Path, d.Data)})
	}
	return out
}

func TestStripServerInstallShUnitIsByteExact(t *testing.T) {
	base := []string{"--cluster-init=false", "--token", "secret", "--disable-agent"}
	// Insert before the first arg, after it, after --token's value, and last.
	for _, pos := range []int{0, 1, 3, 4} {
		for _, form := range [][]string{{"--server", "https://vip:6443"}, {"-s", "https://vip:6443"}, {"--server=https://vip:6443"}} {
			args := append(append(append([]string{}, base[:pos]...), form...), base[pos:]...)
			src := Sources{Unit: WriteUnit("server", args, envPath), UnitPath: unitPath}
			edits, err := StripServer(src)
			if err != nil {
				t.Fatal(err)
			}
			if len(edits) != 1 || !bytes.Equal(edits[0].Before, src.Unit) {
				t.Fatalf("%v: edits %+v", args, edits)
			}
			want := WriteUnit("server", base, envPath)
			if !bytes.Equal(edits[0].After, want) {
				t.Errorf("%v:\n got %q\nwant %q", args, edits[0].After, want)
			}
			if m := eff(t, apply(src, edits)); m["server"].Value != "" || m["token"].Value != "secret" {
				t.Errorf("%v: after strip server=%q token=%q", args, m["server"].Value, m["token"].Value)
			}
		}
	}
}

func TestStripServerHandWrittenUnits(t *testing.T) {
	cases := map[string][2]string{
		"one line": {
			"[Service]\nExecStart=/usr/local/bin/k3s server --server https://x:6443 --token t\nRestart=always\n",
			"[Service]\nExecStart=/usr/local/bin/k3s server --token t\nRestart=always\n"},
		"last line without backslash": {
			"[Service]\nExecStart=/usr/local/bin/k3s \\\n    server \\\n    --server https://x:6443\nRestart=always\n",
			"[Service]\nExecStart=/usr/local/bin/k3s \\\n    server\nRestart=always\n"},
		"middle line": {
			"[Service]\nExecStart=/usr/local/bin/k3s \\\n    server \\\n    -s=https://x:6443 \\\n    --disable-agent\n",
			"[Service]\nExecStart=/usr/local/bin/k3s \\\n    server \\\n    --disable-agent\n"},
		"environment word": {
			"[Service]\nEnvironment=\"K3S_URL=https://x:6443\" K3S_TOKEN=t\nEnvironment=K3S_URL=https://y:6443\nExecStart=/usr/local/bin/k3s server\n",
			"[Service]\nEnvironment=K3S_TOKEN=t\nExecStart=/usr/local/bin/k3s server\n"},
	}
	for name, c := range cases {
		src := Sources{Unit: []byte(c[0]), UnitPath: unitPath}
		edits, err := StripServer(src)
		if err != nil {
			t.Fatal(err)
		}
		if len(edits) != 1 || string(edits[0].After) != c[1] {
			t.Errorf("%s:\n got %q\nwant %q", name, afterOf(edits), c[1])
			continue
		}
		after := apply(src, edits)
		if m := eff(t, after); m["server"].Value != "" {
			t.Errorf("%s: server still %+v", name, m["server"])
		}
		// The directive after the ExecStart must still parse on its own.
		if strings.Contains(c[1], "Restart=always") {
			dirs, _, _ := parseUnit(after.Unit)
			if dirs[len(dirs)-1].key != "Restart" {
				t.Errorf("%s: Restart= swallowed: %+v", name, dirs)
			}
		}
	}
}

func afterOf(e []Edit) string {
	if len(e) == 0 {
		return "<no edit>"
	}
	return string(e[0].After)
}

func TestStripServerConfigKeepsEverythingElse(t *testing.T) {
	cfg := "# cluster config\n" +
		"token: secret   # keep me\n" +
		"server: https://10.0.0.1:6443 # join url\n" +
		"# tls names\n" +
		"tls-san:\n" +
		"  - a.example\n" +
		"  # inner comment\n" +
		"  - b.example\n" +
		"\n" +
		"server+: https://dup:6443\n" +
		"node-label:\n" +
		"  - \"x=y\"\n"
	want := "# cluster config\n" +
		"token: secret   # keep me\n" +
		"# tls names\n" +
		"tls-san:\n" +
		"  - a.example\n" +
		"  # inner comment\n" +
		"  - b.example\n" +
		"\n" +
		"node-label:\n" +
		"  - \"x=y\"\n"
	src := Sources{Config: []byte(cfg), ConfigPath: cfgPath}
	edits, err := StripServer(src)
	if err != nil {
		t.Fatal(err)
	}
	if len(edits) != 1 || string(edits[0].After) != want {
		t.Fatalf("got:\n%s\nwant:\n%s", afterOf(edits), want)
	}
	if !strings.Contains(edits[0].What, "lines 3, 10") {
		t.Errorf("What = %q", edits[0].What)
	}
	// Multi-line values go with their key; a trailing comment at column 1 stays.
	cfg2 := "server: >-\n  https://folded\n  :6443\n# about token\ntoken: x\nserver2: y\n"
	edits, err = StripServer(Sources{Config: []byte(cfg2), ConfigPath: cfgPath})
	if err != nil {
		t.Fatal(err)
	}
	if afterOf(edits) != "# about token\ntoken: x\nserver2: y\n" {
		t.Errorf("folded: %q", afterOf(edits))
	}
	// Flow mapping: re-encoded, other values kept.
	edits, err = StripServer(Sources{Config: []byte("{server: a, token: b}\n"), ConfigPath: cfgPath})
	if err != nil {
		t.Fatal(err)
	}
	if m := eff(t, Sources{Config: edits[0].After, ConfigPath: cfgPath}); m["token"].Value != "b" || m["server"].Key != "" {
		t.Errorf("flow: %q", edits[0].After)
	}
}

func TestStripServerDropInsAndEnv(t *testing.T) {
	only := NamedFile{Path: cfgPath + ".d/50-join.yaml", Data: []byte("# join\nserver: https://a:6443\n")}
	emptyServer := NamedFile{Path: cfgPath + ".d/zz-no-server.yaml", Data: []byte("server: \"\"\n")}
	other := NamedFile{Path: cfgPath + ".d/10-other.yaml", Data: []byte("node-label: [a=b]\n")}
	env := NamedFile{Path: envPath, Data: []byte("K3S_TOKEN='secret'\nK3S_URL='https://a:6443'\nK3S_NODE_NAME='n1'\n")}
	defEnv := NamedFile{Path: "/etc/default/k3s", Data: []byte("K3S_URL=\n")}
	src := Sources{
		Unit: WriteUnit("server", nil, envPath), UnitPath: unitPath,
		Config: []byte("token: secret\n"), ConfigPath: cfgPath,
		DropIns:  []NamedFile{only, emptyServer, other},
		EnvFiles: []NamedFile{defEnv, env},
	}
	edits, err := StripServer(src)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range edits {
		got[e.Path] = string(e.After)
	}
	if len(edits) != 2 {
		t.Errorf("want edits for the drop-in and the env file only, got %v", got)
	}
	if got[only.Path] != "# join\n{}\n" {
		t.Errorf("drop-in left as %q", got[only.Path])
	}
	if got[envPath] != "K3S_TOKEN='secret'\nK3S_NODE_NAME='n1'\n" {
		t.Errorf("env left as %q", got[envPath])
	}
	after := apply(src, edits)
	m := eff(t, after)
	if m["server"].Value != "" || m["token"].Value != "secret" || m["node-name"].Value != "n1" {
		t.Errorf("after strip: %+v", m)
	}
	// Restore: writing Before back gives the original bytes, and a second
	// strip on the stripped sources changes nothing.
	restored := apply(after, func() []Edit {
		var r []Edit
		for _, e := range edits {
			r = append(r, Edit{Path: e.Path, After: e.Before})
		}
		return r
	}())
	for i := range src.DropIns {
		if !bytes.Equal(restored.DropIns[i].Data, src.DropIns[i].Data) {
			t.Errorf("restore %s", src.DropIns[i].Path)
		}
	}
	if !bytes.Equal(restored.EnvFiles[1].Data, env.Data) {
		t.Error("restore env")
	}
	if again, err := StripServer(after); err != nil || len(again) != 0 {
		t.Errorf("second strip: %v %v", again, err)
	}
}

func TestStripServerUnitDropIn(t *testing.T) {
	drop := NamedFile{Path: "/etc/systemd/system/k3s.service.d/override.conf", Data: []byte("[Service]\nExecStart=\nExecStart=/usr/local/bin/k3s server --server https://d:6443\n")}
	src := Sources{Unit: WriteUnit("server", []string{"--cluster-init"}, envPath), UnitPath: unitPath, UnitDropIns: []NamedFile{drop}}
	m := eff(t, src)
	if m["server"].Source != drop.Path || m["cluster-init"].Key != "" {
		t.Errorf("drop-in ExecStart must replace the unit's: %+v", m)
	}
	edits, err := StripServer(src)
	if err != nil || len(edits) != 1 || edits[0].Path != drop.Path || string(edits[0].After) != "[Service]\nExecStart=\nExecStart=/usr/local/bin/k3s server\n" {
		t.Errorf("edits %+v %v", edits, err)
	}
}

func TestReplaceToken(t *testing.T) {
	newTok := "K10" + hash64 + "::server:pa:ss#1'x"
	src := Sources{
		Unit:        WriteUnit("server", []string{"--token", "old", "--server", "https://a:6443"}, envPath),
		UnitPath:    unitPath,
		UnitDropIns: []NamedFile{{Path: "/etc/systemd/system/k3s.service.d/10.conf", Data: []byte("[Service]\nEnvironment=K3S_TOKEN=old\n")}},
		Config:      []byte("# c\ntoken: old # the token\nserver: x\n"),
		ConfigPath:  cfgPath,
		DropIns:     []NamedFile{{Path: cfgPath + ".d/t.yaml", Data: []byte("token: 'old'\n")}, {Path: cfgPath + ".d/u.yaml", Data: []byte("token: \"\"\n")}},
		EnvFiles:    []NamedFile{{Path: envPath, Data: []byte("K3S_TOKEN='old'\nK3S_URL='https://a:6443'\n")}},
	}
	edits, err := ReplaceToken(src, newTok)
	if err != nil {
		t.Fatal(err)
	}
	if len(edits) != 5 {
		t.Errorf("want 5 edited files, got %d", len(edits))
	}
	after := apply(src, edits)
	for _, e := range edits {
		if strings.Contains(e.What, newTok) || strings.Contains(e.What, "old") {
			t.Errorf("What leaks a token: %q", e.What)
		}
	}
	// Every source now carries the new token.
	if m := eff(t, after); m["token"].Value != newTok || m["token"].Kind != KindUnitArg {
		t.Errorf("unit token = %+v", m["token"])
	}
	cfgOnly := eff(t, Sources{Config: after.Config, ConfigPath: cfgPath})
	if cfgOnly["token"].Value != newTok || !strings.Contains(string(after.Config), "# the token") || !strings.HasPrefix(string(after.Config), "# c\n") || !strings.HasSuffix(string(after.Config), "server: x\n") {
		t.Errorf("config after: %q", after.Config)
	}
	if d := eff(t, Sources{DropIns: after.DropIns[:1]}); d["token"].Value != newTok {
		t.Errorf("drop-in after: %q", after.DropIns[0].Data)
	}
	if string(after.DropIns[1].Data) != "token: \"\"\n" {
		t.Error("an empty token must not be replaced")
	}
	if e := eff(t, Sources{EnvFiles: after.EnvFiles}); e["token"].Value != newTok || !strings.HasSuffix(string(after.EnvFiles[0].Data), "K3S_URL='https://a:6443'\n") {
		t.Errorf("env after: %q", after.EnvFiles[0].Data)
	}
	if u := eff(t, Sources{Unit: []byte("[Service]\nExecStart=/k3s server\n"), UnitDropIns: after.UnitDropIns}); u["token"].Value != newTok {
		t.Errorf("unit env after: %q", after.UnitDropIns[0].Data)
	}
	// --token=old and -t old forms.
	for _, u := range []string{"[Service]\nExecStart=/k3s server --token=old\n", "[Service]\nExecStart=/k3s server -t old\n"} {
		edits, err := ReplaceToken(Sources{Unit: []byte(u), UnitPath: unitPath}, "new:tok")
		if err != nil || len(edits) != 1 {
			t.Fatalf("%q: %v %v", u, edits, err)
		}
		if m := eff(t, Sources{Unit: edits[0].After}); m["token"].Value != "new:tok" {
			t.Errorf("%q -> %q", u, edits[0].After)
		}
	}
	// token-file only: reported, not edited.
	_, err = ReplaceToken(Sources{Config: []byte("token-file: /etc/k3s-token\n"), ConfigPath: cfgPath}, "x")
	if !errors.Is(err, ErrTokenFromFile) || !strings.Contains(err.Error(), "/etc/k3s-token") {
		t.Errorf("token-file: %v", err)
	}
	if e, err := ReplaceToken(Sources{Config: []byte("server: a\n"), ConfigPath: cfgPath}, "x"); err != nil || len(e) != 0 {
		t.Errorf("no token source: %v %v", e, err)
	}
}
