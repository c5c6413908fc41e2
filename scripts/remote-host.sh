#!/usr/bin/env bash
# A stand-in for a remote machine, for the tests of remote workers: a network namespace `vind-remote`
# joined to this host by a veth pair, with a Docker engine of its own running inside it.
#
#   scripts/remote-host.sh start [nat|public]   start it (idempotent; a running one only changes mode)
#   scripts/remote-host.sh mode nat|public      switch the mode of a running stand-in
#   scripts/remote-host.sh status               running or not, the mode, the engine's PID (exit 3: stopped)
#   scripts/remote-host.sh stop [--purge]       stop it and remove all it made; --purge also deletes the data root
#
# The link: host side `vind-rh0` 10.251.0.1/30, inside `eth0` 10.251.0.2/30 with the default route via
# 10.251.0.1; IPv6 is off on both ends, so IPv4 is the only way across. The engine: `dockerd` started with
# `nsenter --net=/run/netns/vind-remote` (not `ip netns exec`, which remounts /sys, and dockerd then fails
# with "Devices cgroup isn't mounted"), with its own data root (/var/lib/vind-remote/docker), exec root
# (/run/vind-remote/docker), pidfile, socket (unix:///run/vind-remote/docker.sock), bridge (10.251.1.1/24,
# outside Docker's and vind's address pools, so no network of this host hides behind it) and log
# (/var/log/vind/remote-dockerd.log). Its containers go out through its own masquerade, so this host sees
# them as 10.251.0.2, as it would see a machine on the LAN.
#
# The host's firewall decides what the stand-in can do. Three chains (VIND-REMOTE-IN from INPUT,
# VIND-REMOTE-FWD from DOCKER-USER, VIND-REMOTE-OUT from OUTPUT), each jump matching vind-rh0 only and
# tagged with the comment `vind-remote`, so `stop` removes exactly what `start` added. The chains never
# accept anything: they return (leave the decision to the rules that follow), reject or drop. Who began
# a flow is conntrack's direction of the packet (ORIGINAL or REPLY), so a switch of mode also cuts the
# flows already open in the direction it closes, as a real change of network would.
#   Always: the stand-in reaches this host's own 10.251.0.1 and nothing else: not the host's other
#     addresses, not the containers on the host's Docker networks (a published port of the host counts:
#     it arrives at 10.251.0.1 and is DNAT'd, so the forwarding rule looks at the conntrack *original*
#     destination), never anything off the machine (nothing it begins is forwarded but to what 10.251.0.1
#     publishes, a source other than 10.251.0.2 is dropped, so no answer goes out by the default route,
#     and there is no masquerade for 10.251.0.0/30). Refused with icmp-admin-prohibited, at once.
#   nat (the default): the remote is behind NAT. It dials out to 10.251.0.1; this host and its
#     containers cannot begin a flow with 10.251.0.2, only replies return (dropped, as a NAT drops).
#   public: this host and its containers dial the ports the remote's engine publishes on 10.251.0.2;
#     the remote cannot begin a flow with the host, only replies return (dropped).
#
# `stop` removes the engine's containers first, stops only the dockerd this script started (by the PID
# in its pidfile, checked against its command line) and the containerd that dockerd started (by its
# PID file), then the namespace, the veth and every tagged rule. After an engine that died with its
# containers running, it also ends what they left: their processes (all in the engine's cgroup parent
# `vind-remote`) and their shims (whose working directory is their bundle under our exec root). It
# cleans up after a half-failed start too (`start` calls it when a step fails). The data root
# /var/lib/vind-remote is kept by default: it caches the images copied into the stand-in; `stop --purge`
# deletes it.
set -euo pipefail

NAME=vind-remote
NETNS_FILE=/run/netns/$NAME
HOST_IF=vind-rh0
PEER_TEMP_IF=vind-rr0
HOST_ADDR=10.251.0.1
REMOTE_ADDR=10.251.0.2
LINK_PREFIX=30
LINK_NET=10.251.0.0/30
BRIDGE_IP=10.251.1.1/24
BRIDGE_NET=10.251.1.0/24
STATE=/run/vind-remote
DATA=/var/lib/vind-remote
SOCK=$STATE/docker.sock
PIDFILE=$STATE/dockerd.pid
STARTED_PID=$STATE/started.pid
MODE_FILE=$STATE/mode
LOG=/var/log/vind/remote-dockerd.log
TAG=vind-remote
CHAIN_IN=VIND-REMOTE-IN
CHAIN_FWD=VIND-REMOTE-FWD
CHAIN_OUT=VIND-REMOTE-OUT

say() { echo "remote-host: $*"; }
fail() {
  echo "remote-host: error: $*" >&2
  exit 1
}
ipt() { iptables -w "$@"; }
rdocker() { docker -H "unix://$SOCK" "$@"; }
in_netns() { nsenter --net="$NETNS_FILE" "$@"; }

# ---- addresses -------------------------------------------------------------------------------

ip_to_int() {
  local a b c d
  IFS=. read -r a b c d <<<"$1"
  echo $(((a << 24) | (b << 16) | (c << 8) | d))
}

# overlaps CIDR CIDR: both are IPv4 CIDRs (a bare address counts as /32).
overlaps() {
  local a=${1%/*} pa=32 b=${2%/*} pb=32
  [[ $1 == */* ]] && pa=${1#*/}
  [[ $2 == */* ]] && pb=${2#*/}
  local p=$((pa < pb ? pa : pb))
  local mask=$(((0xffffffff << (32 - p)) & 0xffffffff))
  [ "$p" -eq 0 ] && mask=0
  [ $(($(ip_to_int "$a") & mask)) -eq $(($(ip_to_int "$b") & mask)) ]
}

# Every IPv4 network this host already routes or has a Docker network for, one per line with its source.
host_networks() {
  local line dest
  ip -o -4 route show table main | while read -r line; do
    # shellcheck disable=SC2086 # a route is a list of words
    set -- $line
    case "$1" in
    default) continue ;;
    unreachable | blackhole | prohibit | throw) dest=$2 ;;
    *) dest=$1 ;;
    esac
    [[ " $line " == *" dev $HOST_IF "* ]] || echo "$dest route: $line"
  done
  if docker info >/dev/null 2>&1; then
    local id subnet
    for id in $(docker network ls -q); do
      for subnet in $(docker network inspect "$id" --format '{{range .IPAM.Config}}{{.Subnet}} {{end}}'); do
        [[ $subnet == *:* ]] || echo "$subnet docker network $(docker network inspect "$id" --format '{{.Name}}')"
      done
    done
  fi
}

check_collisions() {
  local net source
  while read -r net source; do
    [ -n "$net" ] || continue
    if overlaps "$net" "$LINK_NET"; then
      fail "the stand-in's link $LINK_NET collides with $net ($source); free it or change LINK_NET in $0"
    fi
    if overlaps "$net" "$BRIDGE_NET"; then
      fail "the stand-in's Docker bridge $BRIDGE_NET collides with $net ($source); change BRIDGE_IP in $0"
    fi
  done < <(host_networks)
}

# ---- the engine ------------------------------------------------------------------------------

# The PID of the dockerd this script started, if it still runs: from dockerd's pidfile, else from the
# PID noted at start, and only if that process's command line is ours (a PID can be reused).
engine_pid() {
  local file pid
  for file in "$PIDFILE" "$STARTED_PID"; do
    [ -s "$file" ] || continue
    pid=$(cat "$file")
    if [[ $pid =~ ^[0-9]+$ ]] && [[ "$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" == *"unix://$SOCK"* ]]; then
      echo "$pid"
      return 0
    fi
  done
  return 1
}

# The containerd that our dockerd started (it writes its PID under our exec root).
containerd_pid() {
  local file=$STATE/docker/containerd/containerd.pid pid
  [ -s "$file" ] || return 1
  pid=$(cat "$file")
  [[ $pid =~ ^[0-9]+$ ]] && [[ "$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" == *"$STATE/docker/containerd"* ]] &&
    echo "$pid"
}

# The processes of the stand-in's containers: all of them sit under its engine's cgroup parent.
container_pids() {
  local dir
  for dir in /sys/fs/cgroup/"$NAME" /sys/fs/cgroup/*/"$NAME"; do
    [ -d "$dir" ] || continue
    find "$dir" -name cgroup.procs -exec cat {} + 2>/dev/null || true
  done | sort -un
}

# The containerd shims of the stand-in's containers. A shim keeps its container's bundle folder, under
# our exec root, as its working directory, and names our containerd's socket on its command line.
shim_pids() {
  local tasks=$STATE/docker/containerd/daemon/io.containerd.runtime.v2.task/ cwd pid
  for cwd in /proc/[0-9]*/cwd; do
    [[ "$(readlink "$cwd" 2>/dev/null)" == "$tasks"* ]] || continue
    pid=${cwd#/proc/}
    pid=${pid%/cwd}
    [[ "$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" == *"containerd-shim"*"$STATE/docker/containerd/containerd.sock"* ]] &&
      echo "$pid"
  done
  return 0
}

# After an engine that died without removing its containers: their processes, then their shims (which
# outlive containerd by design), then the cgroups. Normally there is nothing left but empty cgroups.
remove_container_leftovers() {
  local pids
  pids=$(container_pids)
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086 # one PID per word
    kill -KILL $pids 2>/dev/null || true
    say "killed $(wc -w <<<"$pids") process(es) left by the stand-in's containers"
  fi
  pids=$(shim_pids)
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086 # one PID per word
    kill -KILL $pids 2>/dev/null || true
    say "killed $(wc -w <<<"$pids") containerd shim(s) of the stand-in"
  fi
  for _ in $(seq 1 20); do
    [ -z "$(container_pids)" ] && break
    sleep 0.25
  done
  local dir
  for dir in /sys/fs/cgroup/"$NAME" /sys/fs/cgroup/*/"$NAME"; do
    [ -d "$dir" ] && find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  return 0
}

is_running() {
  engine_pid >/dev/null && [ -e "$NETNS_FILE" ] && rdocker info >/dev/null 2>&1
}

# stop_pid PID WHAT: SIGTERM, up to 30 s, then SIGKILL.
stop_pid() {
  local pid=$1 what=$2
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.5
  done
  say "$what ($pid) did not stop in 30 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 1 20); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.25
  done
}

start_engine() {
  mkdir -p "$DATA/docker" "$(dirname "$LOG")"
  chmod 0700 "$DATA"
  # An empty configuration of its own, so /etc/docker/daemon.json of the host's engine does not apply.
  echo '{}' >"$STATE/daemon.json"
  echo "---- $(date -Is) start" >>"$LOG"
  # setsid: the engine outlives this script and is in no caller's process group; its output goes to
  # the log only, so a caller that waits for this script's output is not held open by it.
  setsid nsenter --net="$NETNS_FILE" dockerd \
    --config-file "$STATE/daemon.json" \
    --data-root "$DATA/docker" \
    --exec-root "$STATE/docker" \
    --pidfile "$PIDFILE" \
    -H "unix://$SOCK" \
    --bip "$BRIDGE_IP" \
    --containerd-namespace "$NAME" \
    --containerd-plugins-namespace "$NAME-plugins" \
    --cgroup-parent "$NAME" \
    </dev/null >>"$LOG" 2>&1 &
  echo $! >"$STARTED_PID"
  local pid=$!
  for _ in $(seq 1 120); do
    if rdocker info >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$pid" 2>/dev/null && ! engine_pid >/dev/null; then
      tail -n 15 "$LOG" >&2 || true
      fail "the stand-in's dockerd exited during start; see $LOG"
    fi
    sleep 0.5
  done
  tail -n 15 "$LOG" >&2 || true
  fail "the stand-in's dockerd did not answer on unix://$SOCK within 60 s; see $LOG"
}

# ---- the link --------------------------------------------------------------------------------

make_link() {
  ip netns add "$NAME"
  ip link add "$HOST_IF" type veth peer name "$PEER_TEMP_IF"
  ip link set "$PEER_TEMP_IF" netns "$NAME"
  in_netns ip link set "$PEER_TEMP_IF" name eth0
  # IPv4 only: with IPv6 off there are no link-local addresses to reach the host (or be reached) by.
  sysctl -qw "net.ipv6.conf.$HOST_IF.disable_ipv6=1"
  in_netns sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip address add "$HOST_ADDR/$LINK_PREFIX" dev "$HOST_IF"
  ip link set "$HOST_IF" up
  in_netns ip link set lo up
  in_netns ip address add "$REMOTE_ADDR/$LINK_PREFIX" dev eth0
  in_netns ip link set eth0 up
  in_netns ip route add default via "$HOST_ADDR" dev eth0
}

# ---- the firewall ----------------------------------------------------------------------------

TAGGED=(-m comment --comment "$TAG")

# The jumps into our chains, each matching the veth only.
JUMPS=(
  "INPUT -i $HOST_IF -j $CHAIN_IN"
  "DOCKER-USER -i $HOST_IF -j $CHAIN_FWD"
  "DOCKER-USER -o $HOST_IF -j $CHAIN_FWD"
  "OUTPUT -o $HOST_IF -j $CHAIN_OUT"
)

# fill_chains MODE: rewrites our three chains for the mode. Who began a flow is read from conntrack's
# direction: a packet arriving from vind-rh0 in the ORIGINAL direction belongs to a flow the stand-in
# began, in the REPLY direction to one this host (or one of its containers) began; the other way round
# for packets leaving to vind-rh0. So a switch of mode cuts at once the flows begun in the direction it
# closes, as a real change of network would; replies in the direction it keeps still pass.
fill_chains() {
  local mode=$1 reject=(-j REJECT --reject-with icmp-admin-prohibited) chain
  for chain in "$CHAIN_IN" "$CHAIN_FWD" "$CHAIN_OUT"; do
    ipt -N "$chain" 2>/dev/null || true
    ipt -F "$chain"
    # Packets conntrack cannot place belong to no flow that was allowed.
    ipt -A "$chain" -m conntrack --ctstate INVALID "${TAGGED[@]}" -j DROP
  done
  # Always: from the stand-in only its own address (the host would answer any other one through its
  # default route, off the machine), to this host only its veth address, and forwarded only what the
  # stand-in sent to that address (a port the host publishes, DNAT'd: hence the original destination).
  ipt -A "$CHAIN_IN" ! -s "$REMOTE_ADDR" "${TAGGED[@]}" -j DROP
  ipt -A "$CHAIN_IN" ! -d "$HOST_ADDR" "${TAGGED[@]}" "${reject[@]}"
  ipt -A "$CHAIN_FWD" -i "$HOST_IF" ! -s "$REMOTE_ADDR" "${TAGGED[@]}" -j DROP
  ipt -A "$CHAIN_FWD" -i "$HOST_IF" -m conntrack --ctdir ORIGINAL -m conntrack ! --ctorigdst "$HOST_ADDR" \
    "${TAGGED[@]}" "${reject[@]}"
  case "$mode" in
  nat)
    # The host and its containers begin nothing with the stand-in; it begins what it likes with 10.251.0.1.
    ipt -A "$CHAIN_IN" -m conntrack --ctdir REPLY "${TAGGED[@]}" -j DROP
    ipt -A "$CHAIN_OUT" -m conntrack --ctdir ORIGINAL "${TAGGED[@]}" -j DROP
    ipt -A "$CHAIN_FWD" -i "$HOST_IF" -m conntrack --ctdir REPLY "${TAGGED[@]}" -j DROP
    ipt -A "$CHAIN_FWD" -o "$HOST_IF" -m conntrack --ctdir ORIGINAL "${TAGGED[@]}" -j DROP
    ;;
  public)
    # The stand-in begins nothing with the host; the host and its containers dial what it publishes.
    # (The host's own refusals, ICMP errors related to the stand-in's flows, still reach it.)
    ipt -A "$CHAIN_IN" -m conntrack --ctdir ORIGINAL "${TAGGED[@]}" -j DROP
    ipt -A "$CHAIN_OUT" -m conntrack --ctdir REPLY -m conntrack ! --ctstate RELATED "${TAGGED[@]}" -j DROP
    ipt -A "$CHAIN_FWD" -i "$HOST_IF" -m conntrack --ctdir ORIGINAL "${TAGGED[@]}" -j DROP
    ipt -A "$CHAIN_FWD" -o "$HOST_IF" -m conntrack --ctdir REPLY "${TAGGED[@]}" -j DROP
    ;;
  esac
  # Always: forwarded to the stand-in only from the host's Docker bridges (Docker masquerades those
  # containers as 10.251.0.1), never from the world outside.
  ipt -A "$CHAIN_FWD" -o "$HOST_IF" -i docker0 "${TAGGED[@]}" -j RETURN
  ipt -A "$CHAIN_FWD" -o "$HOST_IF" -i br-+ "${TAGGED[@]}" -j RETURN
  ipt -A "$CHAIN_FWD" -o "$HOST_IF" "${TAGGED[@]}" "${reject[@]}"
  echo "$mode" >"$MODE_FILE"
}

install_firewall() {
  local mode=$1 jump
  ipt -S DOCKER-USER >/dev/null 2>&1 ||
    fail "the host's DOCKER-USER chain is missing: start the host's Docker engine first (scripts/dockerd.sh start)"
  fill_chains "$mode"
  for jump in "${JUMPS[@]}"; do
    # shellcheck disable=SC2086 # each jump is a list of words
    set -- $jump
    local chain=$1
    shift
    ipt -C "$chain" "$@" "${TAGGED[@]}" 2>/dev/null || ipt -I "$chain" 1 "$@" "${TAGGED[@]}"
  done
}

# Removes every rule tagged `vind-remote` from the chains we jump from, then our chains.
remove_firewall() {
  local chain rule
  for chain in INPUT OUTPUT DOCKER-USER FORWARD; do
    { ipt -S "$chain" 2>/dev/null || true; } | { grep -- "--comment $TAG\b" || true; } | while read -r rule; do
      # shellcheck disable=SC2086 # `iptables -S` prints a rule as words; -A becomes -D
      ipt -D ${rule#-A } || true
    done
  done
  for chain in "$CHAIN_IN" "$CHAIN_FWD" "$CHAIN_OUT"; do
    ipt -F "$chain" 2>/dev/null || true
    ipt -X "$chain" 2>/dev/null || true
  done
}

firewall_present() {
  ipt -S "$CHAIN_IN" >/dev/null 2>&1 || ipt -S "$CHAIN_FWD" >/dev/null 2>&1 || ipt -S "$CHAIN_OUT" >/dev/null 2>&1
}

# ---- commands --------------------------------------------------------------------------------

check_mode() {
  case "$1" in
  nat | public) ;;
  *) fail "unknown mode \"$1\": use nat or public" ;;
  esac
}

leftovers() {
  local found=()
  engine_pid >/dev/null && found+=("engine")
  [ -e "$NETNS_FILE" ] && found+=("namespace")
  ip link show "$HOST_IF" >/dev/null 2>&1 && found+=("veth")
  firewall_present && found+=("firewall rules")
  [ -d "$STATE" ] && found+=("$STATE")
  echo "${found[*]}"
}

cmd_status() {
  if is_running; then
    say "running, mode $(cat "$MODE_FILE" 2>/dev/null || echo unknown), engine pid $(engine_pid)," \
      "unix://$SOCK, remote $REMOTE_ADDR via $HOST_IF $HOST_ADDR"
    return 0
  fi
  local left
  left=$(leftovers)
  if [ -n "$left" ]; then say "stopped, with leftovers: $left (run: $0 stop)"; else say "stopped"; fi
  return 3
}

cmd_mode() {
  local mode=${1:?usage: remote-host.sh mode nat|public}
  check_mode "$mode"
  is_running || fail "the stand-in is not running; start it with: $0 start $mode"
  fill_chains "$mode"
  say "mode $mode"
}

# Unmounts whatever the engine left mounted under our folders, deepest first.
unmount_leftovers() {
  local mount
  { awk '{print $5}' /proc/self/mountinfo | grep -E "^($STATE|$DATA)/" || true; } | sort -r | while read -r mount; do
    umount "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null || true
  done
}

cmd_stop() {
  local purge=false pid ids
  case "${1:-}" in
  --purge) purge=true ;;
  "") ;;
  *) fail "unknown option \"$1\": use --purge" ;;
  esac
  if [ -S "$SOCK" ] && rdocker info >/dev/null 2>&1; then
    ids=$(rdocker ps -aq)
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086 # one argument per container id
      rdocker rm -f -v $ids >/dev/null
      say "removed $(wc -w <<<"$ids") container(s) on the stand-in's engine"
    fi
  fi
  if pid=$(engine_pid); then
    stop_pid "$pid" "the stand-in's dockerd"
    say "stopped the stand-in's dockerd ($pid)"
  fi
  # dockerd stops the containerd it started; after a killed dockerd it may be left.
  if pid=$(containerd_pid); then stop_pid "$pid" "the stand-in's containerd"; fi
  remove_container_leftovers
  unmount_leftovers
  remove_firewall
  if ip link show "$HOST_IF" >/dev/null 2>&1; then ip link del "$HOST_IF"; fi
  if [ -e "$NETNS_FILE" ]; then ip netns del "$NAME"; fi
  rm -rf "$STATE"
  if $purge; then
    rm -rf "$DATA"
    say "stopped; deleted the data root $DATA"
  else
    say "stopped; kept the data root $DATA (its image cache; stop --purge deletes it)"
  fi
}

# While a start is under way: an exit other than success takes back what it made.
on_start_exit() {
  local status=$?
  if [ "$status" -ne 0 ]; then
    echo "remote-host: start failed; cleaning up" >&2
    cmd_stop >/dev/null 2>&1 || true
  fi
}

cmd_start() {
  local mode=${1:-} started
  [ -z "$mode" ] || check_mode "$mode"
  [ "$(id -u)" -eq 0 ] || fail "run as root: it makes a network namespace, a veth pair and firewall rules"
  local tool
  for tool in ip iptables nsenter setsid dockerd docker; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed"
  done
  if is_running; then
    install_firewall "${mode:-$(cat "$MODE_FILE" 2>/dev/null || echo nat)}"
    cmd_status
    return 0
  fi
  mode=${mode:-nat}
  if [ -n "$(leftovers)" ]; then
    say "cleaning up what an earlier run left: $(leftovers)"
    cmd_stop >/dev/null
  fi
  check_collisions
  started=$(date +%s.%N)
  # From here on, a failed step (or a `fail`) takes back everything made before it.
  trap on_start_exit EXIT
  mkdir -p "$STATE" && chmod 0700 "$STATE"
  make_link
  # The rules are in place before the engine starts, so nothing it does escapes them.
  install_firewall "$mode"
  start_engine
  trap - EXIT
  say "started in $(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $started }") s"
  cmd_status
}

case "${1:-}" in
start) cmd_start "${2:-}" ;;
stop) cmd_stop "${2:-}" ;;
status) cmd_status ;;
mode) cmd_mode "${2:-}" ;;
*)
  echo "usage: remote-host.sh start [nat|public] | stop [--purge] | status | mode nat|public" >&2
  exit 2
  ;;
esac
