#!/usr/bin/env bash
# make demo: bring up a lab with the topology of the K3s bug report
# (k3s-io/k3s#11233: 3 servers on a release with the bug, the cluster-init
# server replaced so every server joins through a peer, 2 agents), rotate
# its CA with caretaker (the TUI on a terminal, plain output otherwise),
# show the verification, and take the lab down again, also on failure.
#
# Environment: BIN (default bin/caretaker), DEMO_DIR (default a new temp
# dir, removed afterwards unless DEMO_KEEP=1), DEMO_SUBNET (default
# 127.0.42), DEMO_OUTPUT (auto|tui|plain).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin/caretaker}
OWN_DIR=
if [ -z "${DEMO_DIR:-}" ]; then
	DEMO_DIR=$(mktemp -d "${TMPDIR:-/tmp}/caretaker-demo.XXXXXX")
	OWN_DIR=1
fi
DIR=$DEMO_DIR
SUBNET=${DEMO_SUBNET:-127.0.42}
STATE="$DIR/state"
INV="$DIR/inventory.yaml"

if [ ! -x "$BIN" ]; then
	echo "demo: $BIN not found; run 'make build' (or 'make demo') first" >&2
	exit 2
fi

cleanup() {
	echo
	echo "== taking the lab down"
	"$BIN" lab down --dir "$DIR" || true
	# The lab's keys and backups are in DIR: remove it unless asked to keep
	# it (DEMO_KEEP=1) or it was given (DEMO_DIR).
	if [ -n "$OWN_DIR" ] && [ -z "${DEMO_KEEP:-}" ]; then
		rm -rf -- "$DIR"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

section() { printf '\n== %s\n' "$*"; }

# verify_table prints only the CA consistency part of check-certs.
verify_table() {
	"$BIN" run check-certs -i "$INV" --yes --output plain --state-dir "$STATE" |
		sed -n -e 's/^[0-9:]* \[check\] [^|]*| //p' -e '/^run /p' |
		grep -E '^(datastore |NODE +ROLE|(server|agent)-[0-9]+ +(server|agent) |run )'
}

section "bringing up the lab: 3 servers on v1.30.10+k3s1 (has bug #11233), init server replaced, 2 agents"
"$BIN" lab up --dir "$DIR" --servers 3 --agents 2 --version v1.30.10+k3s1 --scenario init-replaced --subnet "$SUBNET"

section "before: every node holds the original CA"
verify_table || true

output=${DEMO_OUTPUT:-auto}
if [ "$output" = auto ]; then
	if [ -t 0 ] && [ -t 1 ]; then output=tui; else output=plain; fi
fi
section "caretaker run rotate-ca ($output)"
if [ "$output" = tui ]; then
	"$BIN" run rotate-ca -i "$INV" --output tui --state-dir "$STATE"
else
	"$BIN" run rotate-ca -i "$INV" --yes --output plain --state-dir "$STATE"
fi

section "after: the datastore, every server's disk, every live :6443 chain and /cacerts, and every agent hold the new CA"
verify_table
