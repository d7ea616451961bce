// SPDX-License-Identifier: (Apache-2.0 OR GPL-2.0-only)
//
// weft's fast path: two tc programs on tcx ingress that share one set of maps.
//
// weft_from_pod, on the host side of each pod's veth (the pod's egress), takes an IPv4
// packet of a known, unpoliced pod
//   - to another local pod, neither policed: straight into the destination's namespace with
//     bpf_redirect_peer (no bridge, no netfilter, no second backlog pass);
//   - to a pod on a peer node (its block in weft_peers, which weftd fills from the routes it
//     programs): bpf_fib_lookup, and only if the FIB picks weft's route to that very peer
//     (same device, same next hop), out with bpf_redirect_neigh: for a host-gw peer out of
//     the uplink to the peer node; for a VXLAN peer into weft.vx to the peer's VTEP address,
//     whose neighbour and FDB entries (weft's, as for the kernel path) give the tunnel's
//     destination.
// weft_from_uplink, on the node's uplink and on weft.vx, takes an IPv4 packet from a pod on
// a peer node to a known, unpoliced local pod and delivers it with bpf_redirect_peer.
//
// Both do to the packet what the kernel's forwarding would (TTL down by one, the frame
// rewritten as the next hop sends it). Everything else — ARP, IPv6, broadcast, fragments,
// IP options, traffic to or from the node, to the outside (masquerade), to Services
// (kube-proxy's NAT), every packet of a policed pod — returns TC_ACT_OK and continues down
// today's path (bridge/ptp, routing, nftables policy and NAT).
//
// Connections the kernel tracks stay with the kernel. A pod's packet that takes the kernel
// path (to a Service address, to the outside, ...) records the pod's address, source port
// and protocol in weft_kernel_flows; a packet to or from that address and port is then never
// redirected, so the replies of a NATed connection (which come back from a pod address, on
// this node or from a peer) reach conntrack, which undoes the NAT. Flows the fast path
// carries pass netfilter on neither side of this node, so conntrack never holds half of one.
//
// The endpoint map is weftd's: it inserts each pod before its ADD returns and sets
// WEFT_EP_POLICED from its policy state. The source of a packet from a pod must be in the map
// with that pod's veth, so a packet whose source address is not the pod's own (spoofed, or
// from a chained interface) never skips netfilter.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define WEFT_EP_POLICED 1u
#define AF_INET 2
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
// <linux/in.h> and <linux/icmp.h> pull in libc headers, which have no BPF target.
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define ICMP_ECHOREPLY 0
#define ICMP_ECHO 8

struct icmp_echo {
	__u8 type;
	__u8 code;
	__u16 checksum;
	__u16 id;
	__u16 sequence;
};

// Must match weft_ebpf::EndpointValue.
struct weft_endpoint {
	__u32 ifindex;  // host side of the pod's veth: bpf_redirect_peer's target
	__u32 flags;    // WEFT_EP_*
	__u8 mac[6];    // the pod's own MAC (its eth0), the L2 destination it expects
	__u8 gw_mac[6]; // the MAC the pod sees as its gateway's: routed packets come from it
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32); // IPv4 address, network byte order (as in the packet)
	__type(value, struct weft_endpoint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_endpoints SEC(".maps");

// Must match weft_ebpf::PeerKey / PeerValue: a peer node's pod block and the route weft
// programmed to it (host-gw: via the peer's address, out of the uplink; VXLAN: via the
// peer's VTEP address, onlink, out of weft.vx).
struct weft_peer_key {
	__u32 prefixlen;
	__u32 addr; // network byte order
};

struct weft_peer {
	__u32 gateway; // the route's next hop (peer node, or its VTEP), network byte order
	__u32 ifindex; // the device the route goes out of (the uplink, or weft.vx)
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC); // required of LPM tries
	__type(key, struct weft_peer_key);
	__type(value, struct weft_peer);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_peers SEC(".maps");

// A pod's (address, port, protocol) that a connection on the kernel path uses. The port is
// the TCP/UDP port or the ICMP echo identifier, network byte order.
struct weft_flow_key {
	__u32 addr;
	__u16 port;
	__u8 proto;
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct weft_flow_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_kernel_flows SEC(".maps");

// Decisions, per CPU. Slots (weft_ebpf::Counters reads them by these numbers):
//   [0] local pod → local pod, bpf_redirect_peer
//   [1] a pod's packet passed to the kernel path (from a local pod, or from a peer's pod
//       to a local one; any reason)
//   [2] local pod → peer node, bpf_redirect_neigh
//   [3] peer node → local pod, bpf_redirect_peer (on the uplink)
//   [4] passed because the flow belongs to the kernel path (weft_kernel_flows; also in [1])
#define STAT_LOCAL 0
#define STAT_PASSED 1
#define STAT_TO_PEER 2
#define STAT_FROM_PEER 3
#define STAT_KERNEL_FLOW 4
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 5);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_stats SEC(".maps");

static __always_inline int count(__u32 slot, int verdict)
{
	__u64 *n = bpf_map_lookup_elem(&weft_stats, &slot);
	if (n)
		*n += 1;
	return verdict;
}

static __always_inline int pass(void)
{
	return count(STAT_PASSED, TC_ACT_OK);
}

static __always_inline int pass_kernel_flow(void)
{
	count(STAT_KERNEL_FLOW, 0);
	return pass();
}

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] &&
	       a[5] == b[5];
}

// The ports of a packet the fast path may carry: TCP, UDP, or an ICMP echo (its identifier
// on both sides). Anything else (other ICMP, which may be an error about a NATed flow; other
// protocols) has none and stays on the kernel path. The IP header is 20 bytes (checked).
static __always_inline int l4_ports(struct iphdr *ip, void *data_end, __u16 *sport, __u16 *dport)
{
	void *l4 = (void *)(ip + 1);
	switch (ip->protocol) {
	case IPPROTO_TCP:
	case IPPROTO_UDP: {
		__u16 *p = l4;
		if ((void *)(p + 2) > data_end)
			return -1;
		*sport = p[0];
		*dport = p[1];
		return 0;
	}
	case IPPROTO_ICMP: {
		struct icmp_echo *ic = l4;
		if ((void *)(ic + 1) > data_end)
			return -1;
		if (ic->type != ICMP_ECHO && ic->type != ICMP_ECHOREPLY)
			return -1;
		*sport = ic->id;
		*dport = ic->id;
		return 0;
	}
	}
	return -1;
}

static __always_inline int kernel_flow(__u32 addr, __u16 port, __u8 proto)
{
	struct weft_flow_key k = {.addr = addr, .port = port, .proto = proto};
	return bpf_map_lookup_elem(&weft_kernel_flows, &k) != 0;
}

static __always_inline void record_kernel_flow(__u32 addr, __u16 port, __u8 proto)
{
	struct weft_flow_key k = {.addr = addr, .port = port, .proto = proto};
	__u8 one = 1;
	// Already there is the common case: a lookup first saves the LRU a write per packet.
	if (!bpf_map_lookup_elem(&weft_kernel_flows, &k))
		bpf_map_update_elem(&weft_kernel_flows, &k, &one, BPF_ANY);
}

// An IPv4 packet the fast path could take: no fragment (all of a datagram's fragments keep
// one path, the kernel's, whose conntrack reassembles them) and no options.
static __always_inline struct iphdr *plain_ipv4(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);

	if ((void *)(ip + 1) > data_end)
		return 0;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	if (ip->ihl != 5 || (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET)))
		return 0;
	return ip;
}

// TTL down by one, as a forwarding hop does. The caller has checked ttl > 1 (a TTL that
// would expire is left to the kernel, which answers with ICMP).
static __always_inline int decrement_ttl(struct __sk_buff *skb, __u8 ttl)
{
	// TTL is the high byte of the 16-bit word it shares with the protocol.
	__u16 old = bpf_htons((__u16)ttl << 8);
	__u16 new = bpf_htons((__u16)(ttl - 1) << 8);
	__u8 next = ttl - 1;
	if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old, new, 2))
		return -1;
	return bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, ttl), &next, 1, 0);
}

// Routed delivery to a local pod: TTL down, and the frame rewritten to come from the pod's
// gateway to the pod, as the node's routing would send it.
static __always_inline int deliver_routed(struct __sk_buff *skb, struct weft_endpoint *dst,
					  __u8 ttl, __u32 stat)
{
	__u8 d[6], s[6];
	__builtin_memcpy(d, dst->mac, 6);
	__builtin_memcpy(s, dst->gw_mac, 6);
	__u32 ifindex = dst->ifindex;
	if (decrement_ttl(skb, ttl))
		return pass();
	if (bpf_skb_store_bytes(skb, 0, d, 6, 0) || bpf_skb_store_bytes(skb, 6, s, 6, 0))
		return pass();
	return count(stat, bpf_redirect_peer(ifindex, 0));
}

// To a pod on a peer node (host-gw or VXLAN): only along the route weft programmed to that
// peer. Into weft.vx the neighbour lookup finds the peer VTEP's MAC, the VXLAN device's FDB
// the peer node: the same entries, and the same encapsulation, as the kernel path's.
static __always_inline int to_peer(struct __sk_buff *skb, struct iphdr *ip, struct weft_peer *peer,
				   __u16 sport, __u16 dport)
{
	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.tos = ip->tos;
	fib.l4_protocol = ip->protocol;
	fib.sport = sport;
	fib.dport = dport;
	// tot_len stays 0: with a length the helper checks it against the uplink's MTU and
	// refuses every GSO packet (64 KiB); without one it asks is_skb_forwardable(), which
	// knows GSO packets are segmented later.
	fib.ipv4_src = ip->saddr;
	fib.ipv4_dst = ip->daddr;
	fib.ifindex = skb->ingress_ifindex;
	__u8 ttl = ip->ttl;
	__u32 gateway = peer->gateway;
	__u32 uplink = peer->ifindex;

	if (ttl <= 1)
		return pass();
	// A forwarding lookup from the pod's veth, as the kernel's routing does (it also checks
	// that the veth forwards and that the packet fits the uplink's MTU). The neighbour is
	// bpf_redirect_neigh's to resolve.
	long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return pass();
	// Not weft's route to this peer (a more specific route someone else added, or the
	// default route): the kernel decides.
	if (fib.ifindex != uplink || fib.ipv4_dst != gateway)
		return pass();
	if (decrement_ttl(skb, ttl))
		return pass();
	struct bpf_redir_neigh nh = {};
	nh.nh_family = AF_INET;
	nh.ipv4_nh = gateway;
	return count(STAT_TO_PEER, bpf_redirect_neigh(uplink, &nh, sizeof(nh), 0));
}

// aya 0.14 refuses libbpf's SEC("tc"); "classifier" is the same program type.
SEC("classifier")
int weft_from_pod(struct __sk_buff *skb)
{
	struct iphdr *ip = plain_ipv4(skb);
	if (!ip)
		return pass();
	void *data_end = (void *)(long)skb->data_end;
	__u32 saddr = ip->saddr;
	__u32 daddr = ip->daddr;
	__u8 proto = ip->protocol;
	__u16 sport, dport;
	if (l4_ports(ip, data_end, &sport, &dport))
		return pass();

	// The source must be the pod behind this very veth: a packet of one pod with another
	// pod's address (spoofed) keeps netfilter.
	struct weft_endpoint *src = bpf_map_lookup_elem(&weft_endpoints, &saddr);
	if (!src || src->ifindex != skb->ingress_ifindex)
		return pass();
	__u32 src_flags = src->flags;
	struct weft_endpoint *dst = bpf_map_lookup_elem(&weft_endpoints, &daddr);
	struct weft_peer *peer = 0;
	if (!dst) {
		struct weft_peer_key k = {.prefixlen = 32, .addr = daddr};
		peer = bpf_map_lookup_elem(&weft_peers, &k);
		if (!peer) {
			// To the node, a Service, the outside: the kernel path, which may track and
			// NAT it. Whatever comes back to this port must go that way too. Recorded
			// for policed pods as well: their flags may drop while the connection lives.
			record_kernel_flow(saddr, sport, proto);
			return pass();
		}
	}
	if (src_flags & WEFT_EP_POLICED)
		return pass();
	if (kernel_flow(saddr, sport, proto))
		return pass_kernel_flow();
	if (peer)
		return to_peer(skb, ip, peer, sport, dport);

	if (dst->flags & WEFT_EP_POLICED)
		return pass();
	// The reply of a connection dst made on the kernel path (to a Service that chose this
	// pod): conntrack must see it to undo the NAT.
	if (kernel_flow(daddr, dport, proto))
		return pass_kernel_flow();

	// Addressed to the pod's own MAC: the two pods share a subnet (bridge mode, one block)
	// and the frame is delivered as the bridge would. Otherwise it was sent to the
	// gateway and is routed.
	void *data = (void *)(long)skb->data;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > (void *)(long)skb->data_end)
		return pass();
	if (mac_eq(eth->h_dest, dst->mac))
		return count(STAT_LOCAL, bpf_redirect_peer(dst->ifindex, 0));
	if (ip->ttl <= 1)
		return pass();
	return deliver_routed(skb, dst, ip->ttl, STAT_LOCAL);
}

// Where packets from peer nodes arrive: the uplink (host-gw), and weft.vx (VXLAN, once the
// kernel has taken the tunnel's headers off). Packets from pods on peer nodes to local pods
// are delivered; the rest is the node's own traffic (the tunnel's outer packets among it)
// and goes on uncounted: [1] counts pod packets the fast path declined, not the node's.
SEC("classifier")
int weft_from_uplink(struct __sk_buff *skb)
{
	// Frames for another host (a promiscuous or bridged uplink) are not ours to route.
	if (skb->pkt_type != PACKET_HOST)
		return TC_ACT_OK;
	struct iphdr *ip = plain_ipv4(skb);
	if (!ip)
		return TC_ACT_OK;
	void *data_end = (void *)(long)skb->data_end;
	__u32 daddr = ip->daddr;
	__u8 proto = ip->protocol;
	__u16 sport, dport;

	struct weft_endpoint *dst = bpf_map_lookup_elem(&weft_endpoints, &daddr);
	if (!dst)
		return TC_ACT_OK;
	// From a pod on a peer node only: a peer node's own traffic (a host-network pod, a
	// NodePort forwarded with its source translated) is the node's, not the fast path's.
	struct weft_peer_key k = {.prefixlen = 32, .addr = ip->saddr};
	if (!bpf_map_lookup_elem(&weft_peers, &k))
		return pass();
	if (dst->flags & WEFT_EP_POLICED)
		return pass();
	if (l4_ports(ip, data_end, &sport, &dport))
		return pass();
	if (kernel_flow(daddr, dport, proto))
		return pass_kernel_flow();
	if (ip->ttl <= 1)
		return pass();
	return deliver_routed(skb, dst, ip->ttl, STAT_FROM_PEER);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
