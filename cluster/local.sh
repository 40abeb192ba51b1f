#!/usr/bin/env bash
# cluster/local.sh - a local multi-node Ray cluster on ONE machine, for raypipe
# development and CI. See `cluster/local.sh --help` and cluster/README.md.
#
# Design notes (Ray 2.60):
#   * Every node is a separate `ray start --block` process running in the
#     background. `down` sends SIGTERM to exactly those PIDs (recorded in the
#     state dir); `ray start --block` then stops its own raylet/GCS/dashboard
#     children. Other Ray clusters on the same host are left alone.
#   * Each node gets its own --temp-dir under a per-cluster root, so this
#     cluster never touches /tmp/ray (the default temp dir used by
#     `ray.init()` / `ray start` elsewhere on the host, including the
#     /tmp/ray/ray_current_cluster file that `address="auto"` reads).
#   * All ports are picked free at `up` time; nothing is on a fixed default
#     port (6379, 8265, 10001, 52365 may already be taken by another cluster).
#   * --node-ip-address=127.0.0.1 is passed, but Ray 2.60 replaces a loopback
#     address with the host's routable IP (services.resolve_ip_for_localhost),
#     so nodes register as e.g. 192.0.2.2. Only --dashboard-host really binds
#     loopback; the internal gRPC ports listen on all interfaces.
#   * Token authentication is forced on (RAY_AUTH_MODE=token). `ray start`
#     does NOT generate a token (only `ray.init()` does), so `up` creates
#     ~/.ray/auth_token with `ray get-auth-token --generate` if no token is
#     configured, and tightens it to mode 0600.
set -euo pipefail

PROG="${0##*/}"
RAY_BIN="${RAY_BIN:-ray}"
STATE_DIR="${RAYPIPE_CLUSTER_DIR:-.raypipe/cluster}"
READY_TIMEOUT_S="${RAYPIPE_CLUSTER_READY_TIMEOUT:-90}"
STOP_TIMEOUT_S="${RAYPIPE_CLUSTER_STOP_TIMEOUT:-30}"

usage() {
    cat <<EOF
Usage: $PROG up [--workers N] [--cpus-per-node C] [--object-store-mb M]
       $PROG down [--all]
       $PROG status
       $PROG env
       $PROG --help

Start/stop a local multi-node Ray cluster (1 head + N worker nodes) on this
machine with \`ray start\`, for testing raypipe's distributed code paths.

Commands:
  up       Start a head node and N worker nodes. Prints \`export ...\` lines
           (also saved to \$STATE_DIR/env.sh) for RAY_ADDRESS (GCS address, used
           by ray.init()/raypipe), RAY_API_SERVER_ADDRESS (dashboard URL, used by
           \`ray job submit\`) and RAY_AUTH_MODE=token.
  down     Stop exactly the nodes this script started (SIGTERM to the recorded
           \`ray start --block\` PIDs, then SIGKILL to leftovers that run under
           this cluster's temp dir). Other Ray clusters on the host survive.
           --all  additionally run \`ray stop --force\`, which kills EVERY Ray
                  process of this user on this host (other clusters, notebooks,
                  test sessions) - use only if nothing else uses Ray here.
  status   Show the saved addresses, which node PIDs are alive, and
           \`ray status\` for this cluster.
  env      Print the \`export ...\` lines again (eval "\$($PROG env)").

Options for up:
  --workers N          worker nodes besides the head (default 2). Worker i
                       gets the custom resource {"worker_node_<i>": 1}.
  --cpus-per-node C    logical CPUs advertised by each node (default 1).
  --object-store-mb M  object store size per node in MiB (default 512).

Environment:
  RAYPIPE_CLUSTER_DIR  state dir (default .raypipe/cluster, relative to the
                       current directory): PIDs, addresses, logs.
  RAYPIPE_RAY_TEMP_DIR parent of this cluster's Ray temp dirs (default /tmp);
                       the cluster uses <it>/raypipe-ray-<uid>-<gcs port>/.
                       Keep it short: Ray puts unix sockets under it.
  RAY_BIN              ray executable (default: ray on PATH).
  RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH
                       if set, used as the cluster token instead of
                       ~/.ray/auth_token (Ray's own precedence order).

Security:
  The dashboard / Jobs API binds 127.0.0.1 only. Ray 2.60 rewrites
  --node-ip-address=127.0.0.1 to the host's routable IP, and the GCS, raylets,
  Ray Client server, agents and workers listen on all interfaces, so the token
  is what protects the cluster from other hosts - never run with
  RAY_AUTH_MODE=disabled on a shared network.
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 1; }
log() { echo "$PROG: $*" >&2; }

abs_state_dir() {
    mkdir -p "$STATE_DIR"
    STATE_DIR="$(cd "$STATE_DIR" && pwd -P)"
}

free_port() {
    # Bind port 0 on all interfaces (Ray's GCS/raylets listen on 0.0.0.0).
    "$PYTHON" - <<'PY'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("", 0))
print(s.getsockname()[1])
s.close()
PY
}

find_python() {
    # The interpreter next to `ray` (same virtualenv), else python3.
    local ray_path dir
    ray_path="$(command -v "$RAY_BIN" || true)"
    [[ -n "$ray_path" ]] || die "'$RAY_BIN' not found on PATH (activate the virtualenv or set RAY_BIN)"
    dir="$(dirname "$ray_path")"
    if [[ -x "$dir/python" ]]; then PYTHON="$dir/python"; else PYTHON="python3"; fi
}

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

state_get() {
    # state_get KEY -> value from $STATE_DIR/cluster.env (KEY=VALUE lines)
    local key="$1" file="$STATE_DIR/cluster.env"
    [[ -f "$file" ]] || return 1
    sed -n "s/^${key}=//p" "$file" | tail -n 1
}

setup_auth() {
    case "${RAY_AUTH_MODE:-token}" in
        token) ;;
        *) die "RAY_AUTH_MODE=${RAY_AUTH_MODE} - this script only starts token-authenticated clusters" ;;
    esac
    export RAY_AUTH_MODE=token
    if [[ -n "${RAY_AUTH_TOKEN:-}" ]]; then
        TOKEN_SOURCE="RAY_AUTH_TOKEN environment variable"
        return
    fi
    if [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
        [[ -s "$RAY_AUTH_TOKEN_PATH" ]] || die "RAY_AUTH_TOKEN_PATH=$RAY_AUTH_TOKEN_PATH is missing or empty"
        chmod 600 "$RAY_AUTH_TOKEN_PATH"
        TOKEN_SOURCE="$RAY_AUTH_TOKEN_PATH (RAY_AUTH_TOKEN_PATH)"
        return
    fi
    local token_file="$HOME/.ray/auth_token"
    if [[ ! -s "$token_file" ]]; then
        log "no Ray auth token found; generating $token_file"
        (umask 077 && "$RAY_BIN" get-auth-token --generate >/dev/null 2>&1) \
            || die "could not generate a token with '$RAY_BIN get-auth-token --generate'"
    fi
    chmod 700 "$HOME/.ray" 2>/dev/null || true
    chmod 600 "$token_file"
    TOKEN_SOURCE="$token_file (mode $(stat -c %a "$token_file" 2>/dev/null || stat -f %Lp "$token_file"))"
}

wait_started() {
    # wait_started PID LOGFILE NAME
    local pid="$1" logf="$2" name="$3" waited=0
    while (( waited < READY_TIMEOUT_S )); do
        if grep -q "Ray runtime started" "$logf" 2>/dev/null; then return 0; fi
        if ! pid_alive "$pid"; then
            echo "----- $logf -----" >&2; tail -n 40 "$logf" >&2 || true
            die "$name (pid $pid) exited during startup"
        fi
        sleep 1; waited=$((waited + 1))
    done
    echo "----- $logf -----" >&2; tail -n 40 "$logf" >&2 || true
    die "$name did not start within ${READY_TIMEOUT_S}s"
}

print_env() {
    local gcs dash
    gcs="$(state_get GCS_ADDRESS)" || die "no cluster state in $STATE_DIR (run '$PROG up' first)"
    dash="$(state_get DASHBOARD_URL)"
    echo "export RAY_ADDRESS=$gcs"
    echo "export RAY_API_SERVER_ADDRESS=$dash"
    echo "export RAY_AUTH_MODE=token"
}

cmd_up() {
    local workers=2 cpus=1 osm_mb=512
    while (( $# )); do
        case "$1" in
            --workers) workers="${2:?--workers needs a value}"; shift 2 ;;
            --workers=*) workers="${1#*=}"; shift ;;
            --cpus-per-node) cpus="${2:?--cpus-per-node needs a value}"; shift 2 ;;
            --cpus-per-node=*) cpus="${1#*=}"; shift ;;
            --object-store-mb) osm_mb="${2:?--object-store-mb needs a value}"; shift 2 ;;
            --object-store-mb=*) osm_mb="${1#*=}"; shift ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; die "unknown option for up: $1" ;;
        esac
    done
    [[ "$workers" =~ ^[0-9]+$ ]] || die "--workers must be a non-negative integer"
    [[ "$cpus" =~ ^[0-9]+$ ]] || die "--cpus-per-node must be a non-negative integer"
    [[ "$osm_mb" =~ ^[0-9]+$ && "$osm_mb" -ge 100 ]] || die "--object-store-mb must be an integer >= 100"

    find_python
    abs_state_dir
    if [[ -f "$STATE_DIR/cluster.env" ]]; then
        local old_head
        old_head="$(state_get HEAD_PID || true)"
        if pid_alive "$old_head"; then
            die "a cluster from $STATE_DIR is already running (head pid $old_head); run '$PROG down' first"
        fi
        log "removing stale state from a previous run in $STATE_DIR"
        rm -f "$STATE_DIR/cluster.env" "$STATE_DIR/env.sh" "$STATE_DIR"/*.pid
    fi
    setup_auth
    export RAY_USAGE_STATS_ENABLED=0

    local gcs_port dash_port client_port agent_port temp_root osm_bytes
    gcs_port="$(free_port)"; dash_port="$(free_port)"
    client_port="$(free_port)"; agent_port="$(free_port)"
    # Always a unique, recognisable directory name: `down` matches processes
    # and deletes files by it.
    temp_root="${RAYPIPE_RAY_TEMP_DIR:-/tmp}"
    temp_root="${temp_root%/}/raypipe-ray-$(id -u)-$gcs_port"
    osm_bytes=$((osm_mb * 1024 * 1024))
    mkdir -p "$STATE_DIR/logs" "$temp_root"
    chmod 700 "$temp_root"

    # If anything below fails, stop whatever was already started.
    UP_OK=0
    trap 'if [[ "${UP_OK:-1}" == 0 ]]; then log "startup failed; stopping the nodes started so far"; cmd_down >&2 || true; fi' EXIT
    {
        echo "GCS_ADDRESS=127.0.0.1:$gcs_port"
        echo "DASHBOARD_URL=http://127.0.0.1:$dash_port"
        echo "TEMP_ROOT=$temp_root"
        echo "NUM_WORKERS=$workers"
        echo "CPUS_PER_NODE=$cpus"
    } > "$STATE_DIR/cluster.env"

    log "starting head: GCS 127.0.0.1:$gcs_port, dashboard http://127.0.0.1:$dash_port (token from $TOKEN_SOURCE)"
    nohup "$RAY_BIN" start --head --block \
        --node-ip-address=127.0.0.1 \
        --port="$gcs_port" \
        --include-dashboard=true \
        --dashboard-host=127.0.0.1 \
        --dashboard-port="$dash_port" \
        --dashboard-agent-listen-port="$agent_port" \
        --ray-client-server-port="$client_port" \
        --num-cpus="$cpus" --num-gpus=0 \
        --object-store-memory="$osm_bytes" \
        --temp-dir="$temp_root/head" \
        --disable-usage-stats \
        > "$STATE_DIR/logs/head.log" 2>&1 < /dev/null &
    local head_pid=$!
    echo "$head_pid" > "$STATE_DIR/head.pid"
    echo "HEAD_PID=$head_pid" >> "$STATE_DIR/cluster.env"
    wait_started "$head_pid" "$STATE_DIR/logs/head.log" "head node"

    local i wpid wagent
    for (( i = 1; i <= workers; i++ )); do
        wagent="$(free_port)"
        log "starting worker node $i (resource worker_node_$i)"
        nohup "$RAY_BIN" start --block \
            --address="127.0.0.1:$gcs_port" \
            --node-ip-address=127.0.0.1 \
            --dashboard-agent-listen-port="$wagent" \
            --num-cpus="$cpus" --num-gpus=0 \
            --resources="{\"worker_node_$i\": 1}" \
            --object-store-memory="$osm_bytes" \
            --temp-dir="$temp_root/worker$i" \
            --disable-usage-stats \
            > "$STATE_DIR/logs/worker$i.log" 2>&1 < /dev/null &
        wpid=$!
        echo "$wpid" > "$STATE_DIR/worker$i.pid"
        echo "WORKER${i}_PID=$wpid" >> "$STATE_DIR/cluster.env"
        wait_started "$wpid" "$STATE_DIR/logs/worker$i.log" "worker node $i"
    done

    # Wait until the GCS reports all nodes alive.
    local want=$((workers + 1)) have=0 waited=0
    while (( waited < READY_TIMEOUT_S )); do
        have="$(RAY_ADDRESS="127.0.0.1:$gcs_port" "$PYTHON" - <<'PY' 2>/dev/null || echo 0
import os
from ray._raylet import GcsClient
c = GcsClient(address=os.environ["RAY_ADDRESS"])
print(sum(1 for n in c.get_all_node_info(timeout=5).values() if n.state == 0))
PY
)"
        [[ "$have" == "$want" ]] && break
        sleep 1; waited=$((waited + 1))
    done
    [[ "$have" == "$want" ]] || log "warning: GCS reports $have alive node(s), expected $want"

    print_env > "$STATE_DIR/env.sh"
    UP_OK=1
    log "cluster up: $want node(s), state in $STATE_DIR, logs in $STATE_DIR/logs, ray temp dir $temp_root"
    log "dashboard is bound to 127.0.0.1 only; HTTP clients need 'Authorization: Bearer <token>'"
    cat "$STATE_DIR/env.sh"
}

descendants_of() {
    # All (transitive) child PIDs of $1.
    local child
    for child in $(pgrep -P "$1" 2>/dev/null || true); do
        echo "$child"
        descendants_of "$child"
    done
}

kill_tree_leftovers() {
    # SIGKILL any process still running under this cluster's temp root.
    local temp_root="$1" sig="$2" pids
    # Only ever match our own unique directory name (never e.g. "/tmp/").
    [[ "$temp_root" == /*/raypipe-ray-[0-9]*-[0-9]* ]] || return 0
    pids="$(pgrep -f -- "$temp_root/" || true)"
    [[ -n "$pids" ]] || return 0
    # shellcheck disable=SC2086
    kill "-$sig" $pids 2>/dev/null || true
}

cmd_down() {
    local all=0
    while (( $# )); do
        case "$1" in
            --all) all=1; shift ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; die "unknown option for down: $1" ;;
        esac
    done
    abs_state_dir
    if [[ ! -f "$STATE_DIR/cluster.env" ]]; then
        log "no cluster state in $STATE_DIR; nothing to stop"
    else
        local temp_root pids=() tree=() pf pid waited=0
        temp_root="$(state_get TEMP_ROOT || true)"
        # Remember every process of every node before stopping anything, so
        # survivors can be SIGKILLed afterwards (Ray renames many of them,
        # e.g. "ray::DashboardAgent", so matching by name/path is not enough).
        for pf in "$STATE_DIR"/worker*.pid "$STATE_DIR/head.pid"; do
            [[ -f "$pf" ]] || continue
            pid="$(cat "$pf")"
            pid_alive "$pid" || continue
            # shellcheck disable=SC2207
            tree+=($(descendants_of "$pid"))
        done
        # Workers first, head last.
        for pf in "$STATE_DIR"/worker*.pid "$STATE_DIR/head.pid"; do
            [[ -f "$pf" ]] || continue
            pid="$(cat "$pf")"
            if pid_alive "$pid"; then
                log "stopping $(basename "$pf" .pid) (pid $pid)"
                kill -TERM "$pid" 2>/dev/null || true
                pids+=("$pid")
            fi
        done
        if (( ${#pids[@]} > 0 )); then
            while (( waited < STOP_TIMEOUT_S )); do
                local alive=0
                for pid in "${pids[@]}"; do pid_alive "$pid" && alive=1; done
                (( alive == 0 )) && break
                sleep 1; waited=$((waited + 1))
            done
            for pid in "${pids[@]}"; do
                pid_alive "$pid" && { log "pid $pid did not exit, sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
            done
        fi
        sleep 1
        local left=()
        for pid in "${tree[@]+"${tree[@]}"}"; do pid_alive "$pid" && left+=("$pid"); done
        if (( ${#left[@]} > 0 )); then
            log "SIGKILL to ${#left[@]} leftover process(es): ${left[*]}"
            kill -KILL "${left[@]}" 2>/dev/null || true
        fi
        kill_tree_leftovers "$temp_root" KILL
        rm -f "$STATE_DIR/cluster.env" "$STATE_DIR/env.sh" "$STATE_DIR"/*.pid
        if [[ -d "$temp_root" && "$temp_root" == /*/raypipe-ray-[0-9]*-[0-9]* ]]; then
            rm -rf "$temp_root"
        fi
        log "cluster stopped (logs kept in $STATE_DIR/logs)"
    fi
    if (( all )); then
        log "--all: running '$RAY_BIN stop --force' (stops EVERY Ray process of this user on this host)"
        "$RAY_BIN" stop --force
    fi
}

cmd_status() {
    abs_state_dir
    [[ -f "$STATE_DIR/cluster.env" ]] || { echo "no cluster state in $STATE_DIR (not running)"; exit 1; }
    echo "state dir:  $STATE_DIR"
    echo "GCS:        $(state_get GCS_ADDRESS)"
    echo "dashboard:  $(state_get DASHBOARD_URL)"
    echo "temp root:  $(state_get TEMP_ROOT)"
    local pf pid any_dead=0 head_pid
    head_pid="$(state_get HEAD_PID || true)"
    for pf in "$STATE_DIR/head.pid" "$STATE_DIR"/worker*.pid; do
        [[ -f "$pf" ]] || continue
        pid="$(cat "$pf")"
        if pid_alive "$pid"; then echo "$(basename "$pf" .pid): pid $pid alive"
        else echo "$(basename "$pf" .pid): pid $pid DEAD"; any_dead=1; fi
    done
    pid_alive "$head_pid" || { echo "head node is not running; run '$PROG down' to clean up"; exit 1; }
    export RAY_AUTH_MODE=token
    "$RAY_BIN" status --address="$(state_get GCS_ADDRESS)" || exit 1
    (( any_dead == 0 )) || exit 1
}

main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
        up) cmd_up "$@" ;;
        down) cmd_down "$@" ;;
        status) cmd_status "$@" ;;
        env) abs_state_dir; print_env ;;
        -h|--help|help) usage ;;
        "") usage >&2; exit 2 ;;
        *) usage >&2; echo "$PROG: unknown command: $cmd" >&2; exit 2 ;;
    esac
}

main "$@"
