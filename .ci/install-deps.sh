#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks for caretaker's tests, demo
# and benchmarks: OpenSSH's server (real-sshd tests and the lab's openssh
# mode), etcd's client (etcdctl reads the lab's datastore), tmux (TUI
# end-to-end test), sudo (lab nodes then have a NOPASSWD sudo user admin). Go modules are pinned by go.mod/go.sum and downloaded
# through the module proxy.
set -euo pipefail
need=()
command -v /usr/sbin/sshd >/dev/null 2>&1 || need+=(openssh-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v /usr/bin/sudo >/dev/null 2>&1 || need+=(sudo)
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages: ${need[*]} (run as root: apt-get install ${need[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's package scripts may have started sshd on *:22; the tests start
# their own daemons and want the port space quiet.
if [ -f /run/sshd.pid ] && [ "$(id -u)" -eq 0 ]; then
  kill "$(cat /run/sshd.pid)" 2>/dev/null || true
fi
mkdir -p /run/sshd 2>/dev/null && chmod 0755 /run/sshd 2>/dev/null || true
