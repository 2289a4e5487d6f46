package main

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"text/template"

	"github.com/spf13/cobra"

	"github.com/caretaker/caretaker/playbooks"
)

//go:embed scaffold/*.tmpl
var scaffoldFS embed.FS

func init() {
	extraCommands = append(extraCommands, newNewCommand)
}

// playbookNameRe is what a new playbook may be called: it becomes a file
// name and the name `caretaker run` and cluster.run() take.
var playbookNameRe = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

func newNewCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "new",
		Short: "Start a new playbook from a skeleton",
	}
	var dir string
	var force bool
	pb := &cobra.Command{
		Use:   "playbook NAME [--dir DIR]",
		Short: "Write NAME.star, its test NAME_test.star and a module lib_NAME.star",
		Long: `Write a working playbook skeleton: NAME.star (a parameter, a read-only
step, a serial mutating step with a confirm prompt, a load()ed helper),
lib_NAME.star (the module it loads) and NAME_test.star (tests against a
fake cluster). They pass ` + "`caretaker test DIR`" + ` as written. Existing files are
refused (nothing is written) unless --force.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return scaffoldPlaybook(cmd, args[0], dir, force)
		},
	}
	pb.Flags().StringVar(&dir, "dir", ".", "directory to write the files into (created if missing)")
	pb.Flags().BoolVar(&force, "force", false, "overwrite files that exist")
	c.AddCommand(pb)
	return c
}

// scaffoldData fills the scaffold templates.
type scaffoldData struct {
	Name, Module, Dir, Path string
}

func scaffoldPlaybook(cmd *cobra.Command, name, dir string, force bool) error {
	if !playbookNameRe.MatchString(name) {
		return usageError{fmt.Errorf("playbook name %q: use lower-case letters, digits and '-', starting with a letter (e.g. restart-agents)", name)}
	}
	if _, err := fs.Stat(playbooks.FS, name+".star"); err == nil {
		return usageError{fmt.Errorf("playbook name %q is a shipped playbook's; a local file would hide it in tests (`caretaker playbooks show %s`): choose another name", name, name)}
	}
	d := scaffoldData{Name: name, Module: "lib_" + name, Dir: dir, Path: filepath.Join(dir, name+".star")}
	if dir == "." {
		d.Path = "./" + name + ".star"
	}
	files := map[string]string{
		name + ".star":      "scaffold/playbook.star.tmpl",
		name + "_test.star": "scaffold/test.star.tmpl",
		d.Module + ".star":  "scaffold/module.star.tmpl",
	}
	out := map[string][]byte{}
	var clash []string
	for file, tmpl := range files {
		b, err := renderScaffold(tmpl, d)
		if err != nil {
			return err
		}
		out[file] = b
		if _, err := os.Stat(filepath.Join(dir, file)); err == nil && !force {
			clash = append(clash, file)
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return usageError{fmt.Errorf("new playbook: %w", err)}
		}
	}
	if len(clash) > 0 {
		return usageError{fmt.Errorf("new playbook: %v already exist in %s; nothing written (use --force to overwrite, or --dir)", clash, dir)}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("new playbook: %w", err)
	}
	for _, file := range []string{d.Module + ".star", name + ".star", name + "_test.star"} {
		if err := writeFileAtomic(filepath.Join(dir, file), out[file], 0o644); err != nil {
			return fmt.Errorf("new playbook: %w", err)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", filepath.Join(dir, file))
	}
	fmt.Fprintf(cmd.OutOrStdout(), "next: caretaker test %s; caretaker plan %s -i INVENTORY\n", dir, d.Path)
	return nil
}

func renderScaffold(name string, d scaffoldData) ([]byte, error) {
	t, err := template.ParseFS(scaffoldFS, name)
	if err != nil {
		return nil, fmt.Errorf("scaffold %s: %w", name, err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return nil, fmt.Errorf("scaffold %s: %w", name, err)
	}
	return b.Bytes(), nil
}

// writeFileAtomic writes data to a temporary file beside path and renames
// it into place, so a failure never leaves half a file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
