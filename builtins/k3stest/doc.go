// Package k3stest is test support for the k3s builtins and the shipped
// playbooks: a K3s cluster in miniature (Cluster) over fake executors, the
// Starlark `fake` module that builds such clusters from .star tests, and
// RunStarTestFile, which runs the test_* functions of a .star test file.
//
// The datastore of every fake cluster is a real embedded etcd with client
// TLS. Starting it is the slow part, so one Env holds it for many clusters
// (each cluster has its own token and so its own bootstrap key). A test
// binary makes one Env in TestMain and passes it on:
//
//	var env *k3stest.Env
//
//	func TestMain(m *testing.M) {
//		e, err := k3stest.NewEnv()
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//		defer e.Close()
//		env = e
//		m.Run()
//	}
//
//	func TestX(t *testing.T) {
//		c, err := k3stest.NewCluster(env, k3stest.Options{Servers: 2, Agents: -1})
//		...
//		defer c.Close()
//	}
//
// The package holds no process-global state; production code must not
// import it (it pulls in etcd's server).
package k3stest
