package realnode

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// names derives every host-global name of a lab from its subnet
// 127.X.Y, so that labs with different subnets never collide.
type names struct {
	x, y int
}

func (n names) bridge() string { return fmt.Sprintf("ctkbr-%d-%d", n.x, n.y) } // ≤ 13 chars
func (n names) veth(i int) string {
	return fmt.Sprintf("ctkv%d-%d-%d", n.x, n.y, i) // ≤ 15 chars (IFNAMSIZ-1)
}
func (n names) netns(i int) string         { return fmt.Sprintf("ctk-127.%d.%d-%d", n.x, n.y, i) }
func (n names) machine(node string) string { return fmt.Sprintf("ctk-%d-%d-%s", n.x, n.y, node) }
func (n names) cgroup() string             { return fmt.Sprintf("caretaker-realnode-%d-%d", n.x, n.y) }

// checkSubnetFree refuses a subnet whose addresses the host already routes
// somewhere else (another lab, nodes.sh's 127.1.0.0/16, ...), and a lab
// whose bridge or netns names exist.
func checkSubnetFree(ctx context.Context, subnet string, nm names, servers int) error {
	if fileExists(filepath.Join("/sys/class/net", nm.bridge())) {
		return fmt.Errorf("realnode: bridge %s exists: a lab on subnet %s is running (or was not torn down): run `caretaker lab down --engine real` for it, or choose another --subnet", nm.bridge(), subnet)
	}
	for i := 1; i <= servers; i++ {
		if fileExists(filepath.Join("/run/netns", nm.netns(i))) {
			return fmt.Errorf("realnode: network namespace %s exists: a lab on subnet %s was not torn down; `ip netns del %s` or run lab down for it", nm.netns(i), subnet, nm.netns(i))
		}
	}
	for _, host := range []string{subnet + ".1", subnet + ".254"} {
		out, err := run(ctx, "ip", "-4", "route", "get", host)
		if err != nil {
			return fmt.Errorf("realnode: check subnet %s: %w", subnet, err)
		}
		if f := strings.Fields(out); len(f) < 4 || f[0] != "local" || indexOf(f, "lo") < 0 {
			return fmt.Errorf("realnode: subnet %s is in use: the host routes %s elsewhere (%q), e.g. another lab or nodes.sh; choose another --subnet", subnet, host, out)
		}
	}
	return nil
}

// bridgeUp creates the lab's bridge with the host address <subnet>.254/32
// and the local-table route that sends <subnet>.0/24 to it instead of lo.
// The bridge does not forward (forwarding=0): nothing from a node can
// leave the machine through the host.
func bridgeUp(ctx context.Context, subnet, br string) error {
	steps := [][]string{
		{"link", "add", br, "type", "bridge"},
	}
	for _, s := range steps {
		if _, err := run(ctx, "ip", s...); err != nil {
			return fmt.Errorf("realnode: bridge: %w", err)
		}
	}
	for _, kv := range [][2]string{{"route_localnet", "1"}, {"forwarding", "0"}} {
		if err := writeSysctl("net.ipv4.conf."+br+"."+kv[0], kv[1]); err != nil {
			return fmt.Errorf("realnode: bridge: %w", err)
		}
	}
	steps = [][]string{
		{"addr", "add", subnet + ".254/32", "dev", br},
		{"link", "set", br, "up"},
		// 127.0.0.0/8 is "local" on lo in the local table: the longer
		// prefix sends the lab's /24 to the bridge.
		{"route", "add", subnet + ".0/24", "dev", br, "src", subnet + ".254", "table", "local"},
	}
	for _, s := range steps {
		if _, err := run(ctx, "ip", s...); err != nil {
			return fmt.Errorf("realnode: bridge: %w", err)
		}
	}
	return nil
}

// nodeNetUp gives node i its own netns: a veth into the bridge, lo up
// (127.0.0.1 is the node's own), eth0 <subnet>.i/24, the lab's /24 in the
// local table on eth0, and a default route on eth0 (K3s looks for one).
func nodeNetUp(ctx context.Context, subnet, br, ns, veth string, i int) error {
	ip := fmt.Sprintf("%s.%d", subnet, i)
	if _, err := run(ctx, "ip", "netns", "add", ns); err != nil {
		return fmt.Errorf("realnode: netns: %w", err)
	}
	if _, err := run(ctx, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns); err != nil {
		return fmt.Errorf("realnode: veth: %w", err)
	}
	if err := writeSysctl("net.ipv4.conf."+veth+".route_localnet", "1"); err != nil {
		return fmt.Errorf("realnode: veth: %w", err)
	}
	if _, err := run(ctx, "ip", "link", "set", veth, "master", br, "up"); err != nil {
		return fmt.Errorf("realnode: veth: %w", err)
	}
	if _, err := run(ctx, "ip", "netns", "exec", ns, "sh", "-ec",
		"echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet; echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet"); err != nil {
		return fmt.Errorf("realnode: netns %s: %w", ns, err)
	}
	steps := [][]string{
		{"link", "set", "lo", "up"},
		{"link", "set", "eth0", "up"},
		{"addr", "add", ip + "/24", "dev", "eth0"},
		{"route", "add", subnet + ".0/24", "dev", "eth0", "src", ip, "table", "local"},
		{"route", "add", "default", "dev", "eth0", "src", ip},
	}
	for _, s := range steps {
		if _, err := run(ctx, "ip", append([]string{"-n", ns}, s...)...); err != nil {
			return fmt.Errorf("realnode: netns %s: %w", ns, err)
		}
	}
	return nil
}

// netDown deletes the nodes' veths (their eth0 peers go with them), the
// netns and the bridge (its address and routes go with it). Missing
// pieces are fine: a veth also vanishes, asynchronously, with its netns.
func netDown(ctx context.Context, st *state) []error {
	var errs []error
	gone := func(err error) bool { return err == nil || strings.Contains(err.Error(), "Cannot find device") }
	for _, n := range st.Nodes {
		if fileExists(filepath.Join("/sys/class/net", n.Veth)) {
			if _, err := run(ctx, "ip", "link", "del", n.Veth); !gone(err) {
				errs = append(errs, err)
			}
		}
		if fileExists(filepath.Join("/run/netns", n.Netns)) {
			if _, err := run(ctx, "ip", "netns", "del", n.Netns); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if fileExists(filepath.Join("/sys/class/net", st.Bridge)) {
		if _, err := run(ctx, "ip", "link", "del", st.Bridge); !gone(err) {
			errs = append(errs, err)
		}
	}
	return errs
}

// netLeftovers names what of the lab's network still exists.
func netLeftovers(st *state) []string {
	var left []string
	if fileExists(filepath.Join("/sys/class/net", st.Bridge)) {
		left = append(left, "link "+st.Bridge)
	}
	for _, n := range st.Nodes {
		if fileExists(filepath.Join("/sys/class/net", n.Veth)) {
			left = append(left, "link "+n.Veth)
		}
		if fileExists(filepath.Join("/run/netns", n.Netns)) {
			left = append(left, "netns "+n.Netns)
		}
	}
	if b, err := os.ReadFile("/proc/net/route"); err == nil && strings.Contains(string(b), st.Bridge) {
		left = append(left, "route via "+st.Bridge)
	}
	return left
}
