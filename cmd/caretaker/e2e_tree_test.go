package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// fileState is what a snapshot keeps of a file.
type fileState struct {
	SHA256 string
	Mode   fs.FileMode
	Size   int64
}

// treeSnapshot maps path (relative to its root) to its state.
type treeSnapshot map[string]fileState

// snapshotTree records every regular file and symlink under root; skip
// names relative paths (or prefixes ending in "/") to leave out.
func snapshotTree(t testing.TB, root string, skip ...string) treeSnapshot {
	t.Helper()
	snap := treeSnapshot{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		for _, s := range skip {
			if rel == s || (strings.HasSuffix(s, "/") && strings.HasPrefix(rel+"/", s)) {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			snap[rel] = fileState{SHA256: "link:" + target, Mode: info.Mode()}
			return nil
		}
		if !info.Mode().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		s := sha256.Sum256(b)
		snap[rel] = fileState{SHA256: hex.EncodeToString(s[:]), Mode: info.Mode(), Size: info.Size()}
		return nil
	})
	if err != nil {
		t.Fatalf("e2e: snapshot %s: %v", root, err)
	}
	return snap
}

// diffTrees lists what differs between two snapshots.
func diffTrees(before, after treeSnapshot) []string {
	var out []string
	for p, a := range before {
		b, ok := after[p]
		switch {
		case !ok:
			out = append(out, "removed "+p)
		case a != b:
			out = append(out, "changed "+p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			out = append(out, "added "+p)
		}
	}
	sort.Strings(out)
	return out
}
