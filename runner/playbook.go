package runner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.starlark.net/resolve"
	"go.starlark.net/starlark"
	"go.starlark.net/syntax"

	"github.com/caretaker/caretaker/runner/errs"
	"github.com/caretaker/caretaker/runner/inventory"
)

// Plan is a loaded playbook: its parameters and steps with their target
// nodes resolved, known before anything touches a node.
type Plan struct {
	Playbook    string // name shown to the operator (e.g. "rotate-ca")
	File        string // display path of the playbook file
	Description string
	Cluster     *inventory.Cluster
	Nodes       []*inventory.Node // every node taking part (after --limit), servers first
	Params      []*Param
	Steps       []*Step
	// LocalLockOnly says the playbook takes only the controller's local
	// lock, not the cluster lock in etcd (describe(cluster_lock=False)):
	// it stops or replaces the datastore that lock lives in.
	LocalLockOnly bool
	// Sources are the sha256 (hex) of the playbook's source and of every
	// module it loaded, by display path: resume says when they changed.
	Sources map[string]string
}

// Param is a declared playbook parameter.
type Param struct {
	Name    string
	Doc     string
	Default starlark.Value
	Value   starlark.Value
	Choices []string
	// Type is the declared type (type= of param(): duration, file,
	// pem-cert, pem-key, ...); "" means the default's Starlark type.
	Type string
	// Min and Max bound int, float and duration values (nil: unbounded).
	Min, Max starlark.Value
	// Resumable says the value may change on `resume -p` once changes
	// were made (param(resumable=...); durations by default).
	Resumable bool
	Set       bool // given with -p
	Pos       syntax.Position
}

// Step is one declared step of a plan.
type Step struct {
	Index    int
	Name     string
	Selector string
	Nodes    []*inventory.Node // resolved targets (after --limit)
	Serial   int               // nodes in flight at once; 0 = all
	Once     bool              // run once, on the first target node
	Mutates  bool
	Timeout  time.Duration
	Doc      string
	Pos      syntax.Position
	Body     starlark.Callable
	// Func, when set, is a Go body run instead of Body (for commands such
	// as `caretaker check` that run Go operations through the engine).
	Func func(ctx context.Context, env *Env) error
}

// Info returns the event form of the step.
func (s *Step) Info() StepInfo {
	info := StepInfo{Index: s.Index, Name: s.Name, Serial: s.Serial, Mutates: s.Mutates, Once: s.Once, Pos: s.Pos.String(), Doc: s.Doc}
	for _, n := range s.Nodes {
		info.Nodes = append(info.Nodes, n.Name)
		if s.Once {
			break
		}
	}
	return info
}

// LoadOptions say which playbook to load and against what.
type LoadOptions struct {
	// Name is the playbook's display name; default the file's base name
	// without .star.
	Name string
	// Path is the playbook file: a path on disk, or a path inside FS.
	Path string
	// FS, when set, holds the playbook and the modules beside it (shipped
	// playbooks are embedded); when nil, Path is read from disk.
	FS fs.FS
	// FSPrefix is prepended to paths inside FS for display.
	FSPrefix string
	// LibDirs are extra directories load() may read from (--lib).
	LibDirs []string
	// Params are the -p key=value pairs.
	Params map[string]string
	// Predeclared are the builtins playbooks see (builtins.All).
	Predeclared starlark.StringDict
	// Cluster is the cluster the plan targets; Limit restricts its nodes
	// with a selector (see Cluster.Select).
	Cluster *inventory.Cluster
	Limit   string
	// MaxSteps bounds Starlark execution steps while loading; 0 = 10M.
	MaxSteps uint64
}

// PlaybookError is an error in a playbook: where it is and the Starlark
// call stack that led to it.
type PlaybookError struct {
	Pos       string // file:line:col
	Msg       string
	Backtrace string // empty for syntax errors
	Err       error
}

func (e *PlaybookError) Error() string {
	if e.Pos != "" && !strings.HasPrefix(e.Msg, e.Pos) {
		return e.Pos + ": " + e.Msg
	}
	return e.Msg
}

// Unwrap returns the cause.
func (e *PlaybookError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrBadInput) true.
func (e *PlaybookError) Is(target error) bool { return target == errs.ErrBadInput }

// Load reads a playbook and builds its plan. It runs the playbook's top
// level (which declares parameters and steps) but touches no node.
func Load(opts LoadOptions) (*Plan, error) {
	if opts.Cluster == nil {
		return nil, fmt.Errorf("load %s: no cluster given: %w", opts.Path, errs.ErrBadInput)
	}
	l := &loader{opts: opts, cache: map[string]*loadEntry{}}
	name := opts.Name
	if name == "" {
		name = strings.TrimSuffix(path.Base(filepath.ToSlash(opts.Path)), ".star")
	}
	l.plan = &Plan{Playbook: name, Cluster: opts.Cluster}
	nodes, err := l.limitNodes()
	if err != nil {
		return nil, err
	}
	l.plan.Nodes = nodes

	root := l.rootRef()
	l.plan.File = root.display
	if _, err := l.exec(root); err != nil {
		return nil, err
	}
	var unknown []string
	for k := range opts.Params {
		if l.param(k) == nil {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("unknown parameter %s for playbook %s; it takes: %s: %w", strings.Join(quoteAll(unknown), ", "), name, l.paramList(), errs.ErrBadInput)
	}
	if len(l.plan.Steps) == 0 {
		return nil, fmt.Errorf("%s declares no steps (call step(name, body, ...) at the top level): %w", root.display, errs.ErrBadInput)
	}
	return l.plan, nil
}

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strconv.Quote(s)
	}
	return out
}

type moduleRef struct {
	fsys    fs.FS  // nil: the local disk
	path    string // path in fsys, or on disk
	display string
	// base and rel, for a load()ed module on disk: the directory it must
	// stay inside and its path there (read through os.Root).
	base, rel string
}

func (r moduleRef) read() ([]byte, error) {
	if r.fsys == nil && r.base != "" {
		root, err := os.OpenRoot(r.base)
		if err != nil {
			return nil, err
		}
		defer root.Close()
		return root.ReadFile(filepath.FromSlash(r.rel))
	}
	if r.fsys == nil {
		return os.ReadFile(r.path)
	}
	return fs.ReadFile(r.fsys, r.path)
}

type loadEntry struct {
	globals starlark.StringDict
	err     error
	loading bool
}

type loader struct {
	opts  LoadOptions
	plan  *Plan
	cache map[string]*loadEntry
}

func (l *loader) rootRef() moduleRef {
	if l.opts.FS != nil {
		p := path.Clean(filepath.ToSlash(l.opts.Path))
		return moduleRef{fsys: l.opts.FS, path: p, display: path.Join(l.opts.FSPrefix, p)}
	}
	return moduleRef{path: l.opts.Path, display: l.opts.Path}
}

func (l *loader) limitNodes() ([]*inventory.Node, error) {
	nodes := append([]*inventory.Node(nil), l.opts.Cluster.Nodes...)
	inventory.SortNodes(nodes)
	if l.opts.Limit == "" {
		return nodes, nil
	}
	limited, err := l.opts.Cluster.Select(l.opts.Limit)
	if err != nil {
		return nil, fmt.Errorf("--limit: %w", err)
	}
	if len(limited) == 0 {
		return nil, l.opts.Cluster.NoMatch("--limit", l.opts.Limit)
	}
	return limited, nil
}

func (l *loader) param(name string) *Param {
	for _, p := range l.plan.Params {
		if p.Name == name {
			return p
		}
	}
	return nil
}

func (l *loader) paramList() string {
	if len(l.plan.Params) == 0 {
		return "no parameters"
	}
	var out []string
	for _, p := range l.plan.Params {
		ty := p.Type
		if ty == "" {
			ty = p.Default.Type()
		}
		s := fmt.Sprintf("%s (%s, default %s)", p.Name, ty, p.Default.String())
		if len(p.Choices) > 0 {
			s = fmt.Sprintf("%s (%s)", p.Name, strings.Join(p.Choices, "|"))
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}

// resolve finds a load()ed module: beside the loading module first, then in
// each --lib directory. Absolute paths and paths leaving those directories
// are refused: playbooks reach nothing else.
func (l *loader) resolve(from moduleRef, module string) (moduleRef, error) {
	clean := path.Clean(filepath.ToSlash(module))
	if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") || !strings.HasSuffix(clean, ".star") {
		return moduleRef{}, fmt.Errorf("load(%q): only .star modules beside the playbook or in a --lib directory can be loaded, by a relative path without '..'", module)
	}
	var tried []string
	if from.fsys != nil {
		p := path.Join(path.Dir(from.path), clean)
		if _, err := fs.Stat(from.fsys, p); err == nil {
			return moduleRef{fsys: from.fsys, path: p, display: path.Join(l.opts.FSPrefix, p)}, nil
		}
		tried = append(tried, path.Join(l.opts.FSPrefix, p))
	} else {
		dir := filepath.Dir(from.path)
		p := filepath.Join(dir, filepath.FromSlash(clean))
		if ok, err := insideDir(dir, clean); err != nil {
			return moduleRef{}, fmt.Errorf("load(%q): %w", module, err)
		} else if ok {
			return moduleRef{path: p, display: p, base: dir, rel: clean}, nil
		}
		tried = append(tried, p)
	}
	for _, dir := range l.opts.LibDirs {
		p := filepath.Join(dir, filepath.FromSlash(clean))
		if ok, err := insideDir(dir, clean); err != nil {
			return moduleRef{}, fmt.Errorf("load(%q): %w", module, err)
		} else if ok {
			return moduleRef{path: p, display: p, base: dir, rel: clean}, nil
		}
		tried = append(tried, p)
	}
	return moduleRef{}, fmt.Errorf("load(%q): module not found (looked in %s; add a directory with --lib)", module, strings.Join(tried, ", "))
}

// insideDir reports whether dir holds the module rel as a regular file
// that stays inside dir once symbolic links are followed (os.Root refuses
// any path that leaves it). A module that exists but leads out is an
// error, not "not found": playbooks reach nothing beyond their directory
// and the --lib directories.
func insideDir(dir, rel string) (bool, error) {
	full := filepath.Join(dir, filepath.FromSlash(rel))
	if _, err := os.Lstat(full); err != nil {
		return false, nil
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return false, fmt.Errorf("open %s: %w", dir, err)
	}
	defer root.Close()
	fi, err := root.Stat(filepath.FromSlash(rel))
	if err != nil {
		return false, fmt.Errorf("%s leads outside %s through a symbolic link; only modules inside the playbook's directory or a --lib directory can be loaded: %w", full, dir, errs.ErrBadInput)
	}
	if !fi.Mode().IsRegular() {
		return false, fmt.Errorf("%s is not a regular file: %w", full, errs.ErrBadInput)
	}
	return true, nil
}

const planKey = "caretaker.loader"
const refKey = "caretaker.module"

func (l *loader) exec(ref moduleRef) (starlark.StringDict, error) {
	if e, ok := l.cache[ref.display]; ok {
		if e.loading {
			return nil, fmt.Errorf("load cycle: %s loads itself (directly or through other modules)", ref.display)
		}
		return e.globals, e.err
	}
	entry := &loadEntry{loading: true}
	l.cache[ref.display] = entry
	src, err := ref.read()
	if err != nil {
		entry.loading, entry.err = false, fmt.Errorf("read %s: %w", ref.display, err)
		return nil, entry.err
	}
	if l.plan.Sources == nil {
		l.plan.Sources = map[string]string{}
	}
	sum := sha256.Sum256(src)
	l.plan.Sources[ref.display] = hex.EncodeToString(sum[:])
	th := &starlark.Thread{Name: "load " + ref.display}
	th.SetLocal(planKey, l)
	th.SetLocal(refKey, ref)
	max := l.opts.MaxSteps
	if max == 0 {
		max = 10_000_000
	}
	stoppedAt := limitSteps(th, max)
	th.Print = func(_ *starlark.Thread, msg string) { fmt.Fprintln(os.Stderr, msg) }
	th.Load = func(t *starlark.Thread, module string) (starlark.StringDict, error) {
		from, _ := t.Local(refKey).(moduleRef)
		target, err := l.resolve(from, module)
		if err != nil {
			return nil, err
		}
		return l.exec(target)
	}
	globals, err := execFile(th, ref.display, src, l.predeclared())
	entry.loading = false
	if err != nil && th.ExecutionSteps() >= max {
		err = fmt.Errorf("loading %s ran %d Starlark operations, the limit for a playbook's top level: an endless loop? (stopped at %s)", ref.display, max, stoppedAt(err))
	}
	if err != nil {
		entry.err = playbookError(err)
		return nil, entry.err
	}
	globals.Freeze()
	entry.globals = globals
	return globals, nil
}

// execFile is starlark.ExecFileOptions with one more check between
// compiling and running: members of builtin modules must exist
// (checkModuleAttrs).
func execFile(th *starlark.Thread, name string, src []byte, pre starlark.StringDict) (starlark.StringDict, error) {
	f, prog, err := starlark.SourceProgramOptions(fileOptions(), name, src, pre.Has)
	if err != nil {
		return nil, err
	}
	if err := checkModuleAttrs(f, pre); err != nil {
		return nil, err
	}
	g, err := prog.Init(th, pre)
	g.Freeze()
	return g, err
}

// fileOptions are the Starlark dialect of playbooks: Go-like conveniences
// (while, set, top-level if/for, recursion) that make maintenance code
// easier to write.
func fileOptions() *syntax.FileOptions {
	return &syntax.FileOptions{Set: true, While: true, TopLevelControl: true, GlobalReassign: false, Recursion: true}
}

func playbookError(err error) error {
	var pe *PlaybookError
	if errors.As(err, &pe) {
		return err
	}
	var ee *starlark.EvalError
	if errors.As(err, &ee) {
		pos := strings.TrimSuffix(innermostPos(ee.CallStack), ": ")
		msg := ee.Msg
		// A failing load() nests the inner module's error; surface its
		// position, which is where the problem is.
		var inner *PlaybookError
		if errors.As(ee.Unwrap(), &inner) {
			return &PlaybookError{Pos: inner.Pos, Msg: inner.Msg, Backtrace: inner.Backtrace + "\n" + ee.Backtrace(), Err: err}
		}
		return &PlaybookError{Pos: pos, Msg: msg, Backtrace: ee.Backtrace(), Err: err}
	}
	var rl resolve.ErrorList
	if errors.As(err, &rl) && len(rl) > 0 {
		return &PlaybookError{Pos: rl[0].Pos.String(), Msg: rl[0].Msg, Err: err}
	}
	var se syntax.Error
	if errors.As(err, &se) {
		return &PlaybookError{Pos: se.Pos.String(), Msg: se.Msg, Err: err}
	}
	return &PlaybookError{Msg: err.Error(), Err: err}
}

func (l *loader) predeclared() starlark.StringDict {
	d := starlark.StringDict{}
	for k, v := range l.opts.Predeclared {
		d[k] = v
	}
	d["step"] = starlark.NewBuiltin("step", stepBuiltin)
	d["param"] = starlark.NewBuiltin("param", paramBuiltin)
	d["describe"] = starlark.NewBuiltin("describe", describeBuiltin)
	return d
}

func loaderFrom(th *starlark.Thread, name string) (*loader, error) {
	l, _ := th.Local(planKey).(*loader)
	if l == nil {
		return nil, fmt.Errorf("%s: can only be called while the playbook loads (at its top level), not inside a step", name)
	}
	return l, nil
}

// describe(text, cluster_lock=True): the playbook's one-paragraph
// description, shown by `caretaker playbooks` and in the plan.
// cluster_lock=False makes runs of it take only the controller's local
// lock: for playbooks that stop or replace the datastore the cluster lock
// lives in (restore-datastore).
func describeBuiltin(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	l, err := loaderFrom(th, b.Name())
	if err != nil {
		return nil, err
	}
	var text string
	clusterLock := true
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "text", &text, "cluster_lock?", &clusterLock); err != nil {
		return nil, err
	}
	if l.plan.Description == "" {
		l.plan.Description = text
	}
	if !clusterLock {
		l.plan.LocalLockOnly = true
	}
	return starlark.None, nil
}

// ParamValues returns the parameters as strings, for events and the journal.
func (p *Plan) ParamValues() map[string]string {
	out := map[string]string{}
	for _, x := range p.Params {
		if s, ok := starlark.AsString(x.Value); ok {
			out[x.Name] = s
		} else {
			out[x.Name] = x.Value.String()
		}
	}
	return out
}
