// Package realnode is the lab's real engine: real K3s servers (the binary
// of shared/k3s, as the installer's k3s.service) on real systemd machines.
// Each node is a systemd-nspawn container booting a Debian 12 root
// filesystem with systemd as PID 1, journald, dbus, logind, OpenSSH sshd
// and sudo, on its own loopback address in its own network namespace.
// The facts and pitfalls it follows are in shared/docs/real-nodes.md.
//
//	c, err := realnode.Start(ctx, realnode.Options{Dir: dir, Servers: 3, Subnet: "127.2.1"})
//	defer c.Close()
//	inv, _ := inventory.Load(c.InventoryPath()) // root@<Subnet>.N, strict host keys
//	out, _, code, _ := c.Exec(ctx, "server-1", "systemctl is-active k3s")
//
// # What Start does
//
//  1. Available: root, host tools (installed with apt-get when missing),
//     overlayfs, cgroups, a K3s binary. Host sysctls raised
//     (fs.inotify.max_user_instances/watches, net.ipv4.conf.all.route_localnet);
//     the values found are recorded in /run/caretaker-realnode/saved.json
//     by the first lab and restored by the last one's Close (one file per
//     running lab in /run/caretaker-realnode/labs, under a flock).
//  2. Caches in CacheDir (default /var/cache/caretaker/realnode), each
//     built once under a flock into a temp dir renamed into place:
//     base-<hash of package list and hooks> (mmdebstrap --variant=minbase
//     from the host's own Debian sources; no SSH host keys, empty
//     machine-id, apt timers masked, sudo user admin) and
//     k3s-<sha256 of the given file>/usr/local/bin/k3s (decompressed with
//     `xz -dc` when the name ends in .xz). Neither changes once written.
//  3. Per node: an overlay root with two lower layers,
//     lowerdir=k3s-<sha>:base-<hash>, and its own upper/work under
//     Dir/nodes/<node>/ — /usr/local/bin/k3s is an ordinary file at no
//     per-node cost; own hostname, machine-id, /etc/hosts listing every
//     node, ed25519 host key (collected into Dir/known_hosts), and the
//     client key Dir/id_ed25519 as authorized_keys of root and admin.
//  4. Network, all inside 127/8: a bridge ctkbr-X-Y (subnet 127.X.Y) with
//     127.X.Y.254/32, route_localnet=1, forwarding=0 and the route
//     127.X.Y.0/24 in the local table; per node a netns ctk-127.X.Y-N with
//     a veth ctkvX-Y-N into the bridge, lo up, eth0 127.X.Y.N/24, the /24
//     in its local table and a default route on eth0. Start refuses a
//     subnet the host already routes elsewhere (another lab, nodes.sh).
//  5. Launch: per node a supervisor `sh -c` (supervisorScript; chosen over
//     a re-exec of the caller's binary so that no main needs a hook) in
//     its own session (setsid), so it outlives the starting process. It
//     writes itself into cgroup.procs of <hierarchy>/caretaker-realnode-X-Y/<node>
//     for each hierarchy (hybrid: name=systemd and unified; pure v2:
//     /sys/fs/cgroup alone), then runs systemd-nspawn --boot
//     --register=no --keep-unit --machine=ctk-X-Y-<node> ... and runs it
//     again when it exits 133 (reboot inside). Booted when
//     `systemctl is-system-running --wait` over real SSH (strict
//     known_hosts) answers running or degraded.
//  6. K3s: installer-shaped /etc/systemd/system/k3s.service
//     (internal/k3s.WriteUnit), k3s.service.env, /etc/rancher/k3s/config.yaml
//     (real-nodes.md's server config); `server` in the source ServerSource
//     names. `systemctl enable k3s`, start server-1 (cluster-init) until
//     /readyz answers ok with the admin client cert, then the others at
//     once (K3s retries etcd's one-learner limit; $CARETAKER_REALNODE_JOIN=serial
//     for one by one), then for init-replaced server-1 drops cluster-init, gets
//     server: https://<server-2>:6443 in the same source and restarts.
//  7. Dir/inventory.yaml (root, Dir/id_ed25519, Dir/known_hosts, strict,
//     default K3s paths; `k3s: {bootstrap_bug: true}` per server with
//     BootstrapBug) and the state file Dir/realnode.json, which is written
//     before each resource is made so Close can always undo it.
//
// # The CLI hook (wired in lab/cli.go by the lab's owner)
//
//	caretaker lab up --engine real [--dir DIR] [--k3s-binary PATH] [--servers N]
//	    [--scenario init-replaced|cluster-init] [--server-source NODE=config|dropin|unit|env ...]
//	    [--secure-token] [--bootstrap-bug] [--subnet 127.1.0] [--name lab]
//
// maps its flags onto Options (K3sBinary, Servers, Scenario, ServerSource,
// SecureToken, BootstrapBug, Subnet, Name, Dir; Agents from --agents must
// be 0 and gives ErrAgentsUnsupported otherwise, so `--engine real` should
// default --agents to 0) and calls Start in the foreground: no daemon is
// needed, because the machines belong to their supervisors, not to the
// calling process. It prints c.InventoryPath() and exits. Then
//
//	lab status --engine real: Open(dir) then Status(ctx) (JSON-serialisable)
//	lab fault NODE fail-start|clear: Open(dir) then SetFault(ctx, NODE, fault)
//	lab down: Open(dir) then Close()
//
// A CLI can tell which engine a dir holds by the presence of
// Dir/realnode.json (StateFile). Available() gives the error to print
// when `--engine real` cannot run here.
//
// # Figures
//
// Measured bring-up and teardown times are in lab/realnode/README.md
// (3 servers ready from the cached rootfs in 44-54 s on this 2-core VM).
package realnode
