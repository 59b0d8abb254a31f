#!/usr/bin/env bash
# A loopback Ray head node for trying `ray job submit` on one machine.
#
#   cluster/local.sh start [extra `ray start` flags]   start it, print how to reach it
#   cluster/local.sh stop                              stop it (only its own processes)
#   cluster/local.sh status                            `ray status` of this node
#   cluster/local.sh address                           the Jobs API address (http://127.0.0.1:PORT)
#   eval "$(cluster/local.sh env)"                     point `ray job` clients at it (address + auth)
#
# Settings (environment): AUTOAL_RAY_STATE (state dir, default ${TMPDIR:-/tmp}/autoal-ray-$USER),
# AUTOAL_RAY_PORT / AUTOAL_RAY_DASHBOARD_PORT (default: free ports), AUTOAL_RAY_NUM_CPUS
# (default: all), RAY (the ray executable; default: the repo's .venv, else PATH).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
state="${AUTOAL_RAY_STATE:-${TMPDIR:-/tmp}/autoal-ray-${USER:-$(id -un)}}"
if [[ -n "${RAY:-}" ]]; then ray_bin="$RAY"
elif [[ -x "$repo/.venv/bin/ray" ]]; then ray_bin="$repo/.venv/bin/ray"
else ray_bin="$(command -v ray)" || { echo "local.sh: no 'ray' found; set RAY=/path/to/ray" >&2; exit 2; }
fi
bin_dir="$(cd "$(dirname "$ray_bin")" && pwd)"
py="$bin_dir/python"; [[ -x "$py" ]] || py="$(command -v python3)"

die() { echo "local.sh: $*" >&2; exit 1; }

# Loopback-only node: with this set, Ray resolves "127.0.0.1" to itself instead of rewriting it
# to the machine's routable IP (where nothing listens). Job drivers inherit it from `ray start`.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0

# Token auth stays on. `ray start` only turns it on by itself when a token already exists
# (ray.init() would generate one, `ray start` does not), so we say so explicitly and keep this
# node's token in its state dir rather than in the user's ~/.ray/auth_token.
auth_env() {
    export RAY_AUTH_MODE=token
    if [[ -z "${RAY_AUTH_TOKEN:-}" ]]; then export RAY_AUTH_TOKEN_PATH="$state/auth_token"; fi
}

load() {
    [[ -f "$state/node.env" ]] || die "no head node recorded in $state (run: cluster/local.sh start)"
    # shellcheck source=/dev/null
    source "$state/node.env"
}

alive() {  # the `ray start --block` process we recorded is still ours and running
    [[ -f "$state/pid" ]] || return 1
    local pid; pid="$(cat "$state/pid")"
    kill -0 "$pid" 2>/dev/null && ps -ww -o args= -p "$pid" | grep -q -- "--temp-dir=$state/ray"
}

group_is_ours() {  # some process of group $1 still runs out of this node's temp dir
    ps -ww -eo pgid=,args= | awk -v g="$1" '$1 == g' | grep -q -- "$state/ray"
}

free_ports() {  # N distinct free TCP ports on 127.0.0.1, held open together so they differ
    "$py" - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

start() {
    if alive; then die "already running (pid $(cat "$state/pid")); stop it first"; fi
    mkdir -p "$state" && chmod 700 "$state"
    if [[ -z "${RAY_AUTH_TOKEN:-}" && ! -s "$state/auth_token" ]]; then
        (umask 077 && "$py" -c 'import secrets; print(secrets.token_hex(32), end="")' >"$state/auth_token")
    fi
    # Fixed-default ports (6379, 8265, 52365, 10001) would clash with any other Ray on this
    # machine, e.g. a test session's own ray.init(); the rest Ray already picks at random.
    local ports; read -r -a ports <<<"$(free_ports 4)"
    local gcs="${AUTOAL_RAY_PORT:-${ports[0]}}" dash="${AUTOAL_RAY_DASHBOARD_PORT:-${ports[1]}}"
    printf 'GCS_PORT=%s\nDASHBOARD_PORT=%s\n' "$gcs" "$dash" >"$state/node.env"
    auth_env
    # Job drivers inherit this process's environment: put the venv first on PATH so an
    # entrypoint like `autoal-dist run ...` resolves to the same installation as `ray`.
    export PATH="$bin_dir:$PATH"
    # `ray start --block` in a session of its own: SIGTERM to it shuts the node down, and its
    # process group is the backstop, so `stop` never needs `ray stop`, which would stop every
    # Ray process on the machine (other users' and test sessions' included).
    nohup "$py" -c 'import os, sys; os.setsid(); os.execv(sys.argv[1], sys.argv[1:])' \
        "$ray_bin" start --head --block \
        --node-ip-address=127.0.0.1 --port="$gcs" \
        --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$dash" \
        --dashboard-agent-listen-port="${ports[2]}" --ray-client-server-port="${ports[3]}" \
        --num-cpus="${AUTOAL_RAY_NUM_CPUS:-$(getconf _NPROCESSORS_ONLN)}" \
        --temp-dir="$state/ray" --disable-usage-stats "$@" \
        </dev/null >"$state/ray-start.log" 2>&1 &
    echo $! >"$state/pid"
    # Ready = the GCS answers `ray status` and the Jobs API answers; bounded wait.
    local deadline=$((SECONDS + ${AUTOAL_RAY_START_TIMEOUT:-120}))
    until "$ray_bin" status --address="127.0.0.1:$gcs" >/dev/null 2>&1 &&
          "$ray_bin" job list --address="http://127.0.0.1:$dash" >/dev/null 2>&1; do
        if ! alive; then
            tail -n 40 "$state/ray-start.log" >&2
            die "ray start exited; log: $state/ray-start.log"
        fi
        if ((SECONDS > deadline)); then
            tail -n 40 "$state/ray-start.log" >&2
            stop >&2
            die "head node not ready after ${AUTOAL_RAY_START_TIMEOUT:-120}s"
        fi
        sleep 1
    done
    echo "Ray head node up (pid $(cat "$state/pid"), GCS 127.0.0.1:$gcs, token auth on)."
    echo "Dashboard / Jobs API: http://127.0.0.1:$dash"
    echo "Submit with:"
    echo "  eval \"\$($0 env)\""
    echo "  ray job submit --address http://127.0.0.1:$dash --working-dir . -- autoal-dist run ..."
}

stop() {
    if [[ ! -f "$state/pid" ]]; then echo "no head node running for $state"; return 0; fi
    local pid; pid="$(cat "$state/pid")"
    # The node's processes share the process group of `ray start --block` (pgid = its pid).
    # SIGTERM to it shuts the node down; what is left of the group after 30s gets SIGKILL,
    # provided the group is still this node's (checked now, not trusted from an old pid file).
    local ours=0
    if alive; then ours=1; kill -TERM "$pid" 2>/dev/null || true
    elif group_is_ours "$pid"; then ours=1
    fi
    if ((ours)); then
        local deadline=$((SECONDS + 30))
        while kill -0 -- "-$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 1; done
        kill -KILL -- "-$pid" 2>/dev/null || true
        echo "stopped head node (pid $pid)"
    else
        echo "no head node running for $state"
    fi
    rm -f "$state/pid"
}

cmd="${1:-}"; shift || true
case "$cmd" in
    start) start "$@" ;;
    stop) stop ;;
    status) alive || die "not running"; load; auth_env; exec "$ray_bin" status --address="127.0.0.1:$GCS_PORT" ;;
    address) load; echo "http://127.0.0.1:$DASHBOARD_PORT" ;;
    env)
        load; auth_env
        # RAY_API_SERVER_ADDRESS (not RAY_ADDRESS) so `ray job ...` finds the node while a local
        # ray.init() in the same shell still starts or joins its own cluster as before.
        echo "export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT RAY_AUTH_MODE=token"
        if [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then echo "export RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH"; fi
        ;;
    *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
