#!/usr/bin/env bash
# A multi-host test bed built from network namespaces, for running one `dcore agent` per
# "host" with its own network stack and address (tests/hosts.rs drives it; usable by hand).
#
#   testbed.sh up BED N [4|6]    hosts 1..N: namespace dcb<BED>h<I>, its eth0 a veth into the
#                                bridge of the switch namespace dcb<BED>sw; host I gets
#                                10.77.BED.I/24 (4) or fd77:0:BED::I/64 (6) and its loopback
#   testbed.sh down BED          removes the bed's namespaces (their links go with them)
#   testbed.sh addr BED I [4|6]  prints host I's address
#   testbed.sh ns BED I          prints host I's namespace (run in it: ip netns exec NS CMD)
#   testbed.sh resolver BED I IP makes IP host I's DNS server: /etc/netns/NS/resolv.conf,
#                                which `ip netns exec` mounts over /etc/resolv.conf
#   testbed.sh check             exit 0 when this machine can build a bed (root, ip, netns)
#
# BED is a number 1..250 (several beds can exist at once). Nothing is added to the host's own
# namespace: the bridge lives in the switch namespace, so the host's firewall never sees the
# bed's traffic, and removing the namespaces removes everything.
set -euo pipefail

ns_host() { echo "dcb$1h$2"; }
ns_switch() { echo "dcb$1sw"; }

addr() {
  local bed=$1 i=$2 fam=${3:-4}
  if [ "$fam" = 6 ]; then echo "fd77:0:$bed::$i"; else echo "10.77.$bed.$i"; fi
}

check() {
  [ "$(id -u)" = 0 ] || { echo "testbed: needs root" >&2; return 1; }
  command -v ip >/dev/null || { echo "testbed: needs ip (iproute2)" >&2; return 1; }
  local probe="dcbprobe$$"
  ip netns add "$probe" 2>/dev/null || { echo "testbed: cannot create a network namespace" >&2; return 1; }
  ip netns del "$probe"
}

bed_arg() {
  [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 250 ] ||
    { echo "testbed: BED must be 1..250, not '$1'" >&2; exit 2; }
}

down() {
  local bed=$1
  rm -rf /etc/netns/dcb"${bed}"h[0-9]*
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^dcb${bed}(h[0-9]+|sw)$" || true); do
    ip netns del "$ns" 2>/dev/null || true
  done
}

up() {
  local bed=$1 n=$2 fam=${3:-4}
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 250 ] ||
    { echo "testbed: N must be 1..250" >&2; exit 2; }
  down "$bed"
  local sw; sw=$(ns_switch "$bed")
  ip netns add "$sw"
  ip -n "$sw" link set lo up
  ip -n "$sw" link add br0 type bridge
  # Forward at once (no STP listening delay).
  ip -n "$sw" link set br0 type bridge stp_state 0 forward_delay 0
  ip -n "$sw" link set br0 up
  for i in $(seq 1 "$n"); do
    local ns; ns=$(ns_host "$bed" "$i")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$sw" link add "h$i" type veth peer name eth0 netns "$ns"
    ip -n "$sw" link set "h$i" master br0
    ip -n "$sw" link set "h$i" up
    if [ "$fam" = 6 ]; then
      ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=0
      ip -n "$ns" -6 addr add "$(addr "$bed" "$i" 6)/64" dev eth0 nodad
    else
      ip -n "$ns" addr add "$(addr "$bed" "$i" 4)/24" dev eth0
    fi
    ip -n "$ns" link set eth0 up
  done
}

cmd=${1:-}
case "$cmd" in
  up) bed_arg "${2:-}"; up "$2" "${3:-}" "${4:-4}" ;;
  down) bed_arg "${2:-}"; down "$2" ;;
  addr) bed_arg "${2:-}"; addr "$2" "${3:?host number}" "${4:-4}" ;;
  ns) bed_arg "${2:-}"; ns_host "$2" "${3:?host number}" ;;
  resolver)
    bed_arg "${2:-}"
    dir="/etc/netns/$(ns_host "$2" "${3:?host number}")"
    mkdir -p "$dir"
    echo "nameserver ${4:?server address}" > "$dir/resolv.conf" ;;
  check) check ;;
  *) sed -n '2,19p' "$0" >&2; exit 2 ;;
esac
