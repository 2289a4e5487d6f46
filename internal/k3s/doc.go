// Package k3s holds the K3s domain knowledge shared by the lab (a K3s
// simulator) and the caretaker built-ins: the bootstrap datastore format and
// its encryption, join tokens and the CA hash, the version gate for the
// --server bootstrap bug, the config sources K3s merges (unit args,
// config.yaml and drop-ins, env files) with byte-exact edits to strip and
// restore them, and certificate generation, rotation, validation and
// checking.
//
// Everything here is a pure function over bytes and values, except the two
// helpers ReadBootstrapFromDir/WriteBootstrapToDir which touch a local
// directory. There is no SSH and no etcd client in this package.
//
// Rules are cited from /work/shared/docs/k3s-ca-rotation.md as
// "k3s-ca-rotation.md §N" and from the captured data in
// /work/shared/k3s-golden as "golden <file>".
package k3s
