#!/usr/bin/env bash
# Multi-host test on one machine: three agents in their own network
# namespaces, joined by veth pairs to a bridge in a fourth namespace, and the
# coordinator in a fifth. Addresses from the RFC 2544 benchmarking range
# 198.18.0.0/15, no default route, nothing touches the host's interfaces.
#
#   coordinator ns  198.18.0.1  --veth--+
#   agent ns a1     198.18.0.11 --veth--+-- bridge br0 (its own ns)
#   agent ns a2     198.18.0.12 --veth--+     a2's link: netem delay 20ms loss 1% (each way)
#   agent ns a3     198.18.0.13 --veth--+     a3's link: cut (down) a few seconds in
#
# Checks result.json: a3 "lost", a1 and a2 "ok" with balanced accounting,
# coordinator exit 4 (host lost); then once more with --allow-partial: exit 0.
#
# Usage: tests/netns/multihost.sh [BIN_DIR]    (default: $CWBENCH_BIN_DIR or target/debug)
# Needs root, ip and tc (iproute2), and network namespaces; prints
# "SKIP: ..." and exits 0 when it cannot run.
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN_DIR=${1:-${CWBENCH_BIN_DIR:-target/debug}}
AGENT=$(realpath -m "$BIN_DIR/agent")
COORD=$(realpath -m "$BIN_DIR/coordinator")
SCENARIO=$(realpath tests/netns/multihost.toml)
CUT_AFTER_S=${CUT_AFTER_S:-3}

skip() {
    echo "SKIP: multihost netns test: $*"
    exit 0
}
[ "$(id -u)" = 0 ] || skip "needs root"
command -v ip >/dev/null || skip "no ip (iproute2)"
command -v tc >/dev/null || skip "no tc (iproute2)"
[ -x "$AGENT" ] && [ -x "$COORD" ] || {
    echo "FAIL: no agent/coordinator binaries in $BIN_DIR (cargo build --workspace)" >&2
    exit 1
}

# Names unique to this run, so two runs (or a stale one) cannot collide.
S=$$
BR=cwb-br-$S
NC=cwb-c-$S
NA=(cwb-a1-$S cwb-a2-$S cwb-a3-$S)
IPS=(198.18.0.11 198.18.0.12 198.18.0.13)
COORD_IP=198.18.0.1
PORT=7070
TOKEN=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
WORK=$(mktemp -d)
PIDS=()
MADE=()

cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        timeout 5 tail --pid="$p" -f /dev/null 2>/dev/null || kill -9 "$p" 2>/dev/null || true
    done
    # Deleting a namespace deletes the veth ends in it, and so their peers.
    for ns in "${MADE[@]}"; do
        ip netns del "$ns" 2>/dev/null || true
    done
    if [ "$rc" != 0 ]; then
        echo "--- multihost failed (exit $rc); logs from $WORK:" >&2
        for f in "$WORK"/*.log; do
            [ -f "$f" ] && { echo "--- $f" >&2; tail -n 30 "$f" >&2; }
        done
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT

ip netns add "$BR" 2>/dev/null || skip "ip netns add does not work here"
MADE+=("$BR")
for ns in "$NC" "${NA[@]}"; do
    ip netns add "$ns"
    MADE+=("$ns")
done

echo "== topology: bridge ns $BR, coordinator ns $NC, agent ns ${NA[*]}"
ip -n "$BR" link add br0 type bridge
ip -n "$BR" link set br0 up
ip -n "$BR" link set lo up
# plug NS IFACE_IN_BRIDGE_NS ADDR
plug() {
    ip -n "$BR" link add "$2" type veth peer name eth0 netns "$1"
    ip -n "$BR" link set "$2" master br0 up
    ip -n "$1" link set lo up
    ip -n "$1" addr add "$3/24" dev eth0
    ip -n "$1" link set eth0 up
}
plug "$NC" vc "$COORD_IP"
for i in 0 1 2; do
    plug "${NA[$i]}" "v$((i + 1))" "${IPS[$i]}"
done
# No default route anywhere: only the connected 198.18.0.0/24.
for ns in "$NC" "${NA[@]}"; do
    if ip -n "$ns" route show default | grep -q .; then
        echo "FAIL: $ns has a default route" >&2
        exit 1
    fi
done

echo "== impair a2's link: netem delay 20ms loss 1% on both ends"
IMPAIRED="netem delay 20ms loss 1% each way"
if ! tc -n "${NA[1]}" qdisc add dev eth0 root netem delay 20ms loss 1% 2>"$WORK/tc.err"; then
    # Some kernels (e.g. minimal VM kernels without modules) lack sch_netem.
    if grep -q 'unknown' "$WORK/tc.err" && [ "${REQUIRE_NETEM:-0}" != 1 ]; then
        echo "NOTE: this kernel has no netem qdisc ($(cat "$WORK/tc.err")): no delay or loss"
        echo "      is injected; a2's link is rate-limited with tbf 1mbit instead (REQUIRE_NETEM=1 fails here)"
        IMPAIRED="tbf rate 1mbit each way (no netem in this kernel)"
        tc -n "${NA[1]}" qdisc add dev eth0 root tbf rate 1mbit burst 32kbit latency 200ms
        tc -n "$BR" qdisc add dev v2 root tbf rate 1mbit burst 32kbit latency 200ms
    else
        echo "FAIL: tc netem: $(cat "$WORK/tc.err")" >&2
        exit 1
    fi
else
    tc -n "$BR" qdisc add dev v2 root netem delay 20ms loss 1%
fi

start_agents() {
    PIDS=()
    for i in 0 1 2; do
        local log="$WORK/agent$((i + 1)).log"
        # The token travels in the environment, as systemd's EnvironmentFile does.
        CWBENCH_TOKEN=$TOKEN ip netns exec "${NA[$i]}" \
            "$AGENT" --listen "${IPS[$i]}:$PORT" --threads 1 >"$log" 2>&1 &
        PIDS+=($!)
    done
    for i in 0 1 2; do
        local log="$WORK/agent$((i + 1)).log"
        timeout 10 bash -c "until grep -q '^agent listening on ${IPS[$i]}:$PORT' '$log'; do sleep 0.1; done" || {
            echo "FAIL: agent $((i + 1)) did not start" >&2
            exit 1
        }
    done
}

# secs T1 T0: T1 - T0 in seconds, one decimal.
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }

# run_coordinator NAME [extra flags...]: runs it in the coordinator ns, cuts
# a3's link CUT_AFTER_S seconds in; sets RC and the timing of the cut.
run_coordinator() {
    local name=$1
    shift
    local log="$WORK/coordinator-$name.log"
    local t0
    t0=$(date +%s.%N)
    CWBENCH_TOKEN=$TOKEN timeout 120 ip netns exec "$NC" "$COORD" \
        --agent "${IPS[0]}:$PORT" --agent "${IPS[1]}:$PORT" --agent "${IPS[2]}:$PORT" \
        --scenario "$SCENARIO" --out "$WORK/results" --run-id "$name" "$@" \
        > >(cat >"$WORK/coordinator-$name.out") \
        2> >(while IFS= read -r l; do printf '%s %s\n' "$(date +%s.%N)" "$l"; done >"$log") &
    local cpid=$!
    sleep "$CUT_AFTER_S"
    CUT_AT=$(date +%s.%N)
    ip -n "$BR" link set v3 down
    echo "   cut a3's link at +$(secs "$CUT_AT" "$t0") s"
    RC=0
    wait "$cpid" || RC=$?
    END_AT=$(date +%s.%N)
    sleep 0.2 # let the stderr timestamper flush
    ip -n "$BR" link set v3 up
    LOST_AT=$(grep -m1 'lost:' "$log" | cut -d' ' -f1 || true)
    echo "   coordinator exit $RC after $(secs "$END_AT" "$t0") s"
    if [ -n "$LOST_AT" ]; then
        echo "   a3 marked lost $(secs "$LOST_AT" "$CUT_AT") s after the cut"
    fi
}

# check NAME WANT_RC
check() {
    local name=$1 want=$2
    local result="$WORK/results/$name/result.json"
    [ "$RC" = "$want" ] || {
        echo "FAIL: $name: coordinator exit $RC, want $want" >&2
        cat "$WORK/coordinator-$name.out" >&2
        exit 1
    }
    [ -f "$result" ] || {
        echo "FAIL: $name: no $result" >&2
        exit 1
    }
    python3 - "$result" "${IPS[@]/%/:$PORT}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
a1, a2, a3 = sys.argv[2:5]
hosts = {h["addr"]: h for h in r["profiles"][0]["hosts"]}
assert set(hosts) == {a1, a2, a3}, hosts.keys()
def fail(m):
    print(f"FAIL: {m}", file=sys.stderr); sys.exit(1)
if hosts[a3]["status"] != "lost":
    fail(f"{a3} (link cut) is {hosts[a3]['status']!r}, want 'lost': {hosts[a3].get('error')}")
for a in (a1, a2):
    h = hosts[a]
    if h["status"] != "ok":
        fail(f"{a} is {h['status']!r}, want 'ok': {h.get('error')}")
    c = h["accounting"]
    out = c["completed"] + c["crashed"] + c["timed_out"] + c["shed"] + c["cancelled"]
    if c["sent"] != out or c["sent"] != c["received"] or c["sent"] == 0:
        fail(f"{a}: accounting does not balance: {c}")
    if h["digest_received"] != h["digest_sent"]:
        fail(f"{a}: digest mismatch")
print(f"   ok: {a3} lost ({hosts[a3].get('error')})")
for a in (a1, a2):
    c = hosts[a]["accounting"]
    print(f"   ok: {a} sent {c['sent']} = completed {c['completed']} + crashed {c['crashed']} + timed_out {c['timed_out']} + shed {c['shed']} + cancelled {c['cancelled']}")
PY
}

echo "== run 1: agents on ${IPS[*]}, cut a3 after ${CUT_AFTER_S} s, expect exit 4"
start_agents
run_coordinator lost
check lost 4
cat "$WORK/coordinator-lost.out"

echo "== run 2: the same with --allow-partial, expect exit 0"
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
for p in "${PIDS[@]}"; do timeout 5 tail --pid="$p" -f /dev/null || true; done
start_agents
run_coordinator partial --allow-partial --quiet
check partial 0

echo "PASS: multihost netns test (a2's link: $IMPAIRED)"
