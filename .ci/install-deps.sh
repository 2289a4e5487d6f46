#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks for caretaker's tests, demo
# and benchmarks; `make test`, `make demo` and `make bench` run it first, so
# the README's commands are all the set-up:
#   openssh-server     real-sshd tests and the lab's openssh mode
#   etcd-client        etcdctl reads the lab's datastore in tests
#   tmux               the TUI end-to-end test
#   systemd-container  systemd-nspawn for the lab's real engine (real K3s on real systemd)
#   mmdebstrap         builds the real engine's Debian 12 root filesystem (once, cached)
#   xz-utils           unpacks the K3s binary (../shared/k3s/k3s.xz)
#   sudo               the lab's nodes then have a NOPASSWD sudo user admin (sudo tests)
# Go modules are pinned by go.mod/go.sum and come through the module proxy.
set -euo pipefail
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have /usr/sbin/sshd || need+=(openssh-server)
have etcdctl || need+=(etcd-client)
have tmux || need+=(tmux)
have systemd-nspawn || need+=(systemd-container)
have mmdebstrap || need+=(mmdebstrap)
have xz || need+=(xz-utils)
have /usr/bin/sudo || need+=(sudo)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "caretaker's tests need these Debian packages: ${need[*]}" >&2
    echo "install them as root, then run make test again:" >&2
    echo "  sudo apt-get install --no-install-recommends ${need[*]}" >&2
    echo "(the lab's nodes, real and simulated, also need root: run make test as root)" >&2
    exit 1
  fi
  echo "installing ${need[*]} (apt-get, once)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends: libnss-mymachines (recommended by
  # systemd-container) would edit the host's nsswitch.conf.
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "caretaker's tests start lab nodes (mount namespaces, network namespaces, systemd-nspawn) and need root:" >&2
  echo "  sudo make test" >&2
  exit 1
fi
# Debian's package scripts may have started sshd on *:22; the tests start
# their own daemons and want the port space quiet.
if [ -f /run/sshd.pid ]; then
  kill "$(cat /run/sshd.pid)" 2>/dev/null || true
fi
mkdir -p /run/sshd && chmod 0755 /run/sshd
