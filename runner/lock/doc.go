// Package lock keeps two runs off one cluster: a controller-side file lock
// and a cluster lock held as an etcd lease in the cluster's own datastore,
// reached through a node's SSH connection.
package lock
