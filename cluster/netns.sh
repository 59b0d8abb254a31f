#!/usr/bin/env bash
# A Ray cluster of one or two nodes on loopback, in a network namespace of its own, for one
# command: a multi-node run on one machine (benchmarks/scale.py, tests/test_two_nodes.py).
#
#   cluster/netns.sh [--nodes 1|2] [--cpus N] [--state DIR] [--object-store-memory BYTES] \
#       -- COMMAND [ARGS...]
#
# Everything runs inside one new network namespace holding only `lo` (`unshare -n`, which
# needs root or user namespaces): the head node at 127.0.0.1, with --nodes 2 a second node at
# 127.0.0.2, each with --cpus CPUs (default 1), then COMMAND, with RAY_ADDRESS and token auth
# (RAY_AUTH_MODE, RAY_AUTH_TOKEN_PATH) set to join that cluster. Outside such a namespace Ray
# rewrites 127.0.0.1 to the machine's address, and a node at 127.0.0.2 listens on every
# interface; inside it, nothing outside the machine (or in other namespaces) can reach the
# nodes, and their ports cannot clash with any other Ray on the machine.
#
# When COMMAND exits (or this script is interrupted) both nodes are stopped by their process
# groups (each `ray start --block` runs in a session of its own), never with `ray stop`, which
# would stop every Ray on the machine. Exit status: COMMAND's; 77 if `unshare -n` is not
# permitted here; 1 if a node did not start. --state (default: a new temp dir, removed at the
# end) holds the token and each node's --temp-dir and `ray start` log.
# Environment: RAY (the ray executable; default: the repo's .venv, else PATH),
# NETNS_START_TIMEOUT (seconds for the nodes to come up, default 180).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
die() { echo "netns.sh: $*" >&2; exit 1; }
usage() { sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

nodes=1 cpus=1 state="" store=""
while (($#)); do
    case "$1" in
        --nodes) nodes="$2"; shift 2 ;;
        --cpus) cpus="$2"; shift 2 ;;
        --state) state="$2"; shift 2 ;;
        --object-store-memory) store="$2"; shift 2 ;;
        --) shift; break ;;
        *) usage ;;
    esac
done
(($#)) || usage
[[ "$nodes" == 1 || "$nodes" == 2 ]] || die "--nodes must be 1 or 2, not $nodes"

if [[ -n "${RAY:-}" ]]; then ray_bin="$RAY"
elif [[ -x "$repo/.venv/bin/ray" ]]; then ray_bin="$repo/.venv/bin/ray"
else ray_bin="$(command -v ray)" || die "no 'ray' found; set RAY=/path/to/ray"
fi
py="$(cd "$(dirname "$ray_bin")" && pwd)/python"; [[ -x "$py" ]] || py="$(command -v python3)"

# ---- outside: enter a new network namespace and run this script again there ----------------
if [[ "${AUTOAL_NETNS_INSIDE:-}" != "$$" ]]; then
    if ! unshare -n true 2>/dev/null; then
        echo "netns.sh: unshare -n is not permitted here (needs root or user namespaces)" >&2
        exit 77
    fi
    # exec keeps this pid, so the check above knows the script is now inside
    AUTOAL_NETNS_INSIDE=$$ exec unshare -n "${BASH_SOURCE[0]}" --nodes "$nodes" --cpus "$cpus" \
        ${state:+--state "$state"} ${store:+--object-store-memory "$store"} -- "$@"
fi

# ---- inside ---------------------------------------------------------------------------------
ip link set lo up
own_state=0
if [[ -z "$state" ]]; then
    # A short path: Ray's Unix sockets live under it and must stay under ~107 characters.
    state="$(mktemp -d /tmp/alns-XXXXXX)"; own_state=1
fi
mkdir -p "$state" && chmod 700 "$state"
(umask 077 && "$py" -c 'import secrets; print(secrets.token_hex(32), end="")' >"$state/auth_token")
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$state/auth_token"
unset RAY_AUTH_TOKEN RAY_ADDRESS RAY_API_SERVER_ADDRESS
export PATH="$(dirname "$ray_bin"):$PATH"
gcs=6379  # a namespace of our own: every port is free
pids=()

stop_nodes() {  # SIGTERM to each `ray start --block` (it shuts its node down), then SIGKILL to
    local pid     # what is left of the node's process group after NETNS_STOP_S (default 15) s
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    local deadline=$((SECONDS + ${NETNS_STOP_S:-15}))
    for pid in "${pids[@]}"; do
        while kill -0 -- "-$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    pids=()
    if ((own_state)); then rm -rf "$state"; fi
}
trap 'stop_nodes' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_node() {  # NAME, then `ray start` flags; the node runs in a session (process group) of its own
    local name="$1"; shift
    "${node_env[@]}" "$py" -c 'import os, sys; os.setsid(); os.execv(sys.argv[1], sys.argv[1:])' \
        "$ray_bin" start --block --num-cpus="$cpus" --temp-dir="$state/$name" \
        --disable-usage-stats ${store:+--object-store-memory="$store"} "$@" \
        </dev/null >"$state/$name.log" 2>&1 &
    pids+=("$!")
}

alive_nodes() {  # how many nodes the GCS counts alive (0 while it does not answer)
    "$py" - "127.0.0.1:$gcs" <<'EOF' 2>/dev/null || echo 0
import sys

from ray._raylet import GcsClient

nodes = GcsClient(address=sys.argv[1]).get_all_node_info(timeout=5)
print(sum(1 for n in nodes.values() if n.state == 0))  # 0: ALIVE
EOF
}

wait_for() {  # N alive nodes within the start timeout
    local deadline=$((SECONDS + ${NETNS_START_TIMEOUT:-180})) pid
    until (( $(alive_nodes) >= $1 )); do
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null && continue
            tail -n 30 "$state"/*.log >&2; die "a ray start exited (logs in $state)"
        done
        ((SECONDS < deadline)) || { tail -n 30 "$state"/*.log >&2; die "$1 node(s) not up in time"; }
        sleep 1
    done
}

# The head: with this set Ray keeps 127.0.0.1 as the node's address instead of rewriting it.
node_env=(env RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0)
start_node head --head --node-ip-address=127.0.0.1 \
    --port="$gcs" --include-dashboard=false --ray-client-server-port=10001 \
    --dashboard-agent-listen-port=52365
wait_for 1
if ((nodes == 2)); then
    # The second node: unset, as on a machine of its own (the head's address is not its own).
    node_env=(env -u RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER)
    start_node node2 --address="127.0.0.1:$gcs" --node-ip-address=127.0.0.2 \
        --dashboard-agent-listen-port=52366
    wait_for 2
fi

export RAY_ADDRESS="127.0.0.1:$gcs"
# COMMAND runs in the background and is waited for: bash runs a trap only once the foreground
# command has returned, and `wait` returns as soon as a signal arrives. On SIGINT or SIGTERM
# the command gets SIGTERM (a background command of a script ignores SIGINT), then the nodes
# are stopped (the EXIT trap).
"$@" &
cmd=$!
stop_all() {
    kill -TERM "$cmd" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$cmd" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
    kill -KILL "$cmd" 2>/dev/null || true
    exit "$1"
}
trap 'stop_all 130' INT
trap 'stop_all 143' TERM
set +e
wait "$cmd"
rc=$?
set -e
exit "$rc"
