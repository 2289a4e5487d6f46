#!/usr/bin/env bash
# bench/run.sh — what `make bench` runs (after `make build`). As root it
# installs what the benchmark needs with apt (openssh-server, ansible,
# pssh); otherwise it says what is missing and runs what it can. Then
# bench/harness measures and writes bench/results.md. Arguments are passed
# to the harness, e.g.:
#
#   bash bench/run.sh -only compare -sizes 50 -runs 5
#   bash bench/run.sh -only overhead,check
#
# Sections: compare (caretaker vs Ansible vs parallel-ssh on real OpenSSH
# lab nodes, N = 3, 20, 50; needs root), overhead (Go benchmarks), check
# (`caretaker check` on a 1,000-node in-process lab), rotate (rotate-ca on
# the 3-server + 2-agent lab). About 10-15 minutes on 2 cores.
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

need_pkgs=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need_pkgs+=(openssh-client)
command -v ansible-playbook >/dev/null 2>&1 || need_pkgs+=(ansible)
command -v parallel-ssh >/dev/null 2>&1 || need_pkgs+=(pssh)

if [ "${#need_pkgs[@]}" -gt 0 ]; then
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "bench: installing ${need_pkgs[*]} with apt"
		apt-get update -q >/dev/null
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null
	else
		echo "bench: MISSING: ${need_pkgs[*]}" >&2
		echo "bench:   install them as root: apt-get install --no-install-recommends ${need_pkgs[*]}" >&2
		echo "bench:   (or run \`sudo make bench\`, which installs them); the runners that need them are reported as not run" >&2
	fi
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "bench: NOT ROOT: the comparison on real OpenSSH nodes needs root (one sshd per node in its own mount namespace); it is skipped" >&2
fi

if ! command -v go >/dev/null 2>&1; then
	echo "bench: go is not on PATH (Go 1.26 at /usr/local/go/bin expected)" >&2
	exit 2
fi
if [ ! -x bin/caretaker ]; then
	echo "bench: building bin/caretaker"
	go build -trimpath -o bin/caretaker ./cmd/caretaker
fi
go build -o bin/bench-harness ./bench/harness
exec bin/bench-harness -repo . -caretaker bin/caretaker -out bench/results.md "$@"
