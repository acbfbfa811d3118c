# shellcheck shell=bash
# node_addr NODE: the address Slurm itself uses to reach NODE (its NodeAddr), as an IPv4 address.
#
# Sourced by ray-on-slurm.sh (and usable on its own): Ray's head and workers listen on this
# address, so Ray traffic takes the network Slurm uses for the node instead of whichever NIC
# `hostname -I` lists first (often the management network, or on the test cluster the
# machine's external address while its node is 127.0.0.1). RAY_NODE_IP_<NODE> (the node name
# with non-alphanumerics as _) overrides one node, RAY_HEAD_IP the head (see ray-on-slurm.sh).
node_addr() {
    local node=$1 var addr
    var="RAY_NODE_IP_${node//[^A-Za-z0-9]/_}"
    if [[ -n ${!var:-} ]]; then echo "${!var}"; return 0; fi
    addr=$(scontrol show node -o "$node" | tr ' ' '\n' | sed -n 's/^NodeAddr=//p')
    if [[ -z $addr ]]; then
        echo "node-addr: Slurm reports no NodeAddr for node '$node'" >&2
        return 1
    fi
    if [[ ! $addr =~ ^[0-9]+(\.[0-9]+){3}$ ]]; then   # NodeAddr may be a host name
        addr=$(getent ahostsv4 "$addr" | awk 'NR == 1 {print $1}')
    fi
    if [[ -z $addr ]]; then
        echo "node-addr: cannot resolve NodeAddr of node '$node' to an IPv4 address" >&2
        return 1
    fi
    echo "$addr"
}
