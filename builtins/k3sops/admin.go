package k3sops

import (
	"context"

	"github.com/caretaker/caretaker/runner/inventory"
)

// AdminCredentials are a server's cluster-admin client certificate and
// key (SD/tls/client-admin.crt/.key, what K3s's own k3s.yaml uses) and the
// server CA bundle the API's serving certificate chains to. They are
// never part of an event or a result shown to playbooks.
type AdminCredentials struct {
	Node   string
	CA     []byte // SD/tls/server-ca.crt
	Cert   []byte
	Key    []byte
	Server string // https://<node address>:6443
}

// ReadAdminCredentials reads the admin credentials of server c (read-only;
// the same in check mode).
func ReadAdminCredentials(ctx context.Context, c *Target) (*AdminCredentials, error) {
	if c.Node.Role != inventory.RoleServer {
		return nil, c.errorf("is an agent; the cluster-admin credentials are on servers")
	}
	sd := c.sd()
	ca, cert, key := sd+"/tls/server-ca.crt", sd+"/tls/client-admin.crt", sd+"/tls/client-admin.key"
	files, err := c.fetchMap(ctx, ca, cert, key)
	if err != nil {
		return nil, err
	}
	for _, p := range []string{ca, cert, key} {
		if _, ok := files[p]; !ok {
			return nil, c.errorf("%s does not exist: has K3s started on this server?", p)
		}
	}
	return &AdminCredentials{Node: c.Node.Name, CA: files[ca].Data, Cert: files[cert].Data, Key: files[key].Data,
		Server: "https://" + c.Node.Address + ":6443"}, nil
}
