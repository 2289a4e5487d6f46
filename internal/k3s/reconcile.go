package k3s

import (
	"bytes"
	"strings"
	"time"
)

// SystemTimeSkew is the tolerance of the reconcile comparison: a disk file
// whose mtime is this much or more after the stored Timestamp is "newer on
// disk" (k3s-ca-rotation.md §2 "Reconcile" step 3; systemTimeSkew).
const SystemTimeSkew = 3 * time.Second

// ReconcileAction is what reconcile does with one bootstrap file.
type ReconcileAction int

// Reconcile outcomes for one file (k3s-ca-rotation.md §2 step 3).
const (
	// ReconcileSkip: disk content is byte-identical to the stored content.
	ReconcileSkip ReconcileAction = iota
	// ReconcileUpdate: the file is missing on disk, or differs and is not
	// newer; K3s logs "<path> will be updated from the datastore.".
	ReconcileUpdate
	// ReconcileNewerOnDisk: differs and disk mtime - stored Timestamp >= 3 s
	// (whole seconds); a conflict that is fatal without --cluster-reset.
	ReconcileNewerOnDisk
)

// String names the action.
func (a ReconcileAction) String() string {
	switch a {
	case ReconcileSkip:
		return "skip"
	case ReconcileUpdate:
		return "update"
	case ReconcileNewerOnDisk:
		return "newer-on-disk"
	}
	return "unknown"
}

// ReconcileFile decides what K3s's isNewerFile does for one file: exists
// false means the file is missing on disk (k3s-ca-rotation.md §2 step 3).
// The comparison uses whole Unix seconds, as K3s does.
func ReconcileFile(exists bool, diskContent []byte, diskMTime time.Time, stored File) ReconcileAction {
	if !exists {
		return ReconcileUpdate
	}
	if bytes.Equal(diskContent, stored.Content) {
		return ReconcileSkip
	}
	if diskMTime.Unix()-stored.Timestamp.Unix() >= int64(SystemTimeSkew/time.Second) {
		return ReconcileNewerOnDisk
	}
	return ReconcileUpdate
}

// NewerThanDatastoreMessage is K3s's fatal message for newer-on-disk files,
// given their full paths in the order found (k3s-ca-rotation.md §2 step 4;
// golden logs-d-newer-than-datastore.txt).
func NewerThanDatastoreMessage(paths []string) string {
	return strings.Join(paths, ", ") + " newer than datastore and could cause a cluster outage. Remove the file(s) from disk and restart to be recreated from datastore."
}

// WillBeUpdatedMessage is K3s's warning for a file reconcile replaces.
func WillBeUpdatedMessage(path string) string {
	return path + " will be updated from the datastore."
}
