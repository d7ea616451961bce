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
// A pod's policed flag moves its new connections to nftables, not its established ones:
// a connection the fast path carried while neither end was policed is in weft_fast_conns
// (one entry for both directions), and while weftd keeps established connections (the
// default; not with --policy-cut-established) its packets go on by the fast path after
// either end becomes policed, as conntrack would keep them on the kernel path: they were
// judged, allowed, on their first packet. A TCP SYN is always a new connection, and an
// entry idle for longer than conntrack would keep the connection (TCP 2 h, UDP 120 s,
// ICMP 30 s) is gone for policed pods. With --policy-cut-established weftd judges each
// entry against the plan after every policy change, as it does conntrack's, and marks the
// denied ones WEFT_CONN_CUT: their packets are dropped, both ways, until a later change
// allows them again or they go quiet.
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
// weft_config[0]: policed pods' established fast connections stay on the fast path, and
// (--policy-cut-established) those weftd marked WEFT_CONN_CUT are dropped.
#define WEFT_CFG_KEEP_ESTABLISHED 1u
#define WEFT_CFG_CUT 2u
// weft_conn.flags: the plan denies the connection (weftd's sweep after a policy change).
#define WEFT_CONN_CUT 1u
#define NSEC_PER_SEC 1000000000ull
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_ACK 0x10
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

// Not preallocated: in a preallocated hash an update frees the replaced element to a free
// list at once, and the next update may refill it while a program on another CPU still
// reads it, which would redirect a packet with another pod's ifindex and MAC. Without
// preallocation replaced elements are freed after an RCU grace period, so a reader sees
// the old entry or the new one, whole.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
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

// weftd's settings for the programs: [0] WEFT_CFG_* flags.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_config SEC(".maps");

// A connection the fast path carried, both directions under one key: the end with the
// lower (address, port) first. Must match weft_ebpf::ConnKey / Conn.
struct weft_conn_key {
	__u32 lo_addr;
	__u32 hi_addr;
	__u16 lo_port;
	__u16 hi_port;
	__u8 proto;
	__u8 pad[3];
};

struct weft_conn {
	__u64 seen;	  // bpf_ktime_get_ns of its last packet, refreshed at most once a second
	__u32 orig_addr; // the end that opened it: a SYN's source, else the first packet's
	__u16 orig_port;
	__u8 flags; // WEFT_CONN_*
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct weft_conn_key);
	__type(value, struct weft_conn);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} weft_fast_conns SEC(".maps");

// Decisions, per CPU. Slots (weft_ebpf::Counters reads them by these numbers):
//   [0] local pod → local pod, bpf_redirect_peer
//   [1] a pod's packet passed to the kernel path (from a local pod, or from a peer's pod
//       to a local one; any reason)
//   [2] local pod → peer node, bpf_redirect_neigh
//   [3] peer node → local pod, bpf_redirect_peer (on the uplink)
//   [4] passed because the flow belongs to the kernel path (weft_kernel_flows; also in [1])
//   [5] a policed pod's packet found to belong to an established fast connection
//       (weft_fast_conns), so not passed for being policed
//   [6] dropped: a packet of a fast connection the plan denies (--policy-cut-established)
#define STAT_LOCAL 0
#define STAT_PASSED 1
#define STAT_TO_PEER 2
#define STAT_FROM_PEER 3
#define STAT_KERNEL_FLOW 4
#define STAT_KEPT 5
#define STAT_CUT 6
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 7);
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
// on both sides), and a TCP segment's flags (0 for the others). Anything else (other ICMP,
// which may be an error about a NATed flow; other protocols) has none and stays on the
// kernel path. The IP header is 20 bytes (checked).
static __always_inline int l4_ports(struct iphdr *ip, void *data_end, __u16 *sport, __u16 *dport,
				    __u8 *tcp_flags)
{
	void *l4 = (void *)(ip + 1);
	*tcp_flags = 0;
	switch (ip->protocol) {
	case IPPROTO_TCP: {
		__u8 *t = l4;
		if ((void *)(t + 14) > data_end)
			return -1;
		*sport = *(__u16 *)t;
		*dport = *(__u16 *)(t + 2);
		*tcp_flags = t[13];
		return 0;
	}
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

static __always_inline void conn_key(struct weft_conn_key *k, __u32 saddr, __u32 daddr,
				     __u16 sport, __u16 dport, __u8 proto)
{
	// Any total order of the ends will do: the numbers as they are in the packet.
	int fwd = saddr < daddr || (saddr == daddr && sport <= dport);
	k->lo_addr = fwd ? saddr : daddr;
	k->hi_addr = fwd ? daddr : saddr;
	k->lo_port = fwd ? sport : dport;
	k->hi_port = fwd ? dport : sport;
	k->proto = proto;
	k->pad[0] = k->pad[1] = k->pad[2] = 0;
}

// How long conntrack keeps an idle connection of the protocol, in its default settings
// (an established TCP one far longer, 5 days: 2 h keeps the map from holding dead ones).
static __always_inline __u64 conn_timeout(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return 7200 * NSEC_PER_SEC;
	case IPPROTO_UDP:
		return 120 * NSEC_PER_SEC;
	}
	return 30 * NSEC_PER_SEC;
}

static __always_inline int is_syn(__u8 tcp_flags)
{
	return (tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN;
}

// Where a policed pod's packet goes: TC_ACT_OK (counted as passed) for a new connection,
// which nftables judges; TC_ACT_SHOT for one weftd cut; -1 to carry on by the fast path, for
// a connection the fast path carried before (judged, allowed, on its first packet).
static __always_inline int policed_gate(struct weft_conn_key *k, __u8 tcp_flags)
{
	if (is_syn(tcp_flags))
		return pass();
	__u32 zero = 0;
	__u32 *cfg = bpf_map_lookup_elem(&weft_config, &zero);
	if (!cfg || !(*cfg & WEFT_CFG_KEEP_ESTABLISHED))
		return pass();
	__u32 cfg_flags = *cfg;
	struct weft_conn *c = bpf_map_lookup_elem(&weft_fast_conns, k);
	if (!c)
		return pass();
	__u64 now = bpf_ktime_get_ns();
	__u64 last = c->seen;
	if (now - last > conn_timeout(k->proto))
		return pass();
	// A cut connection lives while it keeps sending, as its conntrack entry would.
	if (now - last > NSEC_PER_SEC)
		c->seen = now;
	if ((c->flags & WEFT_CONN_CUT) && (cfg_flags & WEFT_CFG_CUT))
		return count(STAT_CUT, TC_ACT_SHOT);
	count(STAT_KEPT, 0);
	return -1;
}

// A packet the fast path carries for unpoliced pods: its connection is (still) a fast one.
// A SYN starts it anew; the first packet seen names the end that opened it (a SYN-ACK's
// destination), as conntrack's original direction does.
static __always_inline void record_fast(struct weft_conn_key *k, __u32 saddr, __u16 sport,
					__u32 daddr, __u16 dport, __u8 tcp_flags)
{
	__u64 now = bpf_ktime_get_ns();
	struct weft_conn *c = bpf_map_lookup_elem(&weft_fast_conns, k);
	if (c && !is_syn(tcp_flags)) {
		if (now - c->seen > NSEC_PER_SEC)
			c->seen = now;
		return;
	}
	int synack = (tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == (TCP_FLAG_SYN | TCP_FLAG_ACK);
	struct weft_conn v = {};
	v.seen = now;
	v.orig_addr = synack ? daddr : saddr;
	v.orig_port = synack ? dport : sport;
	bpf_map_update_elem(&weft_fast_conns, k, &v, BPF_ANY);
}

// The connection of a packet, as the fast path keeps it.
struct pkt_conn {
	struct weft_conn_key key;
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 tcp_flags;
};

static __always_inline void record(struct pkt_conn *pc)
{
	record_fast(&pc->key, pc->saddr, pc->sport, pc->daddr, pc->dport, pc->tcp_flags);
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
				   __u16 sport, __u16 dport, struct pkt_conn *rec)
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
	if (rec)
		record(rec);
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
	__u8 tcp_flags;
	if (l4_ports(ip, data_end, &sport, &dport, &tcp_flags))
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
	struct pkt_conn pc = {.saddr = saddr, .daddr = daddr, .sport = sport, .dport = dport,
			      .tcp_flags = tcp_flags};
	conn_key(&pc.key, saddr, daddr, sport, dport, proto);
	// A policed end: nftables judges its new connections; its established fast ones stay.
	int policed = src_flags & WEFT_EP_POLICED;
	if (policed) {
		int v = policed_gate(&pc.key, tcp_flags);
		if (v >= 0)
			return v;
	}
	if (kernel_flow(saddr, sport, proto))
		return pass_kernel_flow();
	if (peer)
		return to_peer(skb, ip, peer, sport, dport, policed ? 0 : &pc);

	if (dst->flags & WEFT_EP_POLICED) {
		if (!policed) {
			int v = policed_gate(&pc.key, tcp_flags);
			if (v >= 0)
				return v;
		}
		policed = 1;
	}
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
	int same_subnet = mac_eq(eth->h_dest, dst->mac);
	if (!same_subnet && ip->ttl <= 1)
		return pass();
	if (!policed)
		record(&pc);
	if (same_subnet)
		return count(STAT_LOCAL, bpf_redirect_peer(dst->ifindex, 0));
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
	__u32 saddr = ip->saddr;
	__u8 proto = ip->protocol;
	__u16 sport, dport;
	__u8 tcp_flags;

	struct weft_endpoint *dst = bpf_map_lookup_elem(&weft_endpoints, &daddr);
	if (!dst)
		return TC_ACT_OK;
	// From a pod on a peer node only: a peer node's own traffic (a host-network pod, a
	// NodePort forwarded with its source translated) is the node's, not the fast path's.
	struct weft_peer_key k = {.prefixlen = 32, .addr = saddr};
	if (!bpf_map_lookup_elem(&weft_peers, &k))
		return pass();
	if (l4_ports(ip, data_end, &sport, &dport, &tcp_flags))
		return pass();
	struct pkt_conn pc = {.saddr = saddr, .daddr = daddr, .sport = sport, .dport = dport,
			      .tcp_flags = tcp_flags};
	conn_key(&pc.key, saddr, daddr, sport, dport, proto);
	int policed = dst->flags & WEFT_EP_POLICED;
	if (policed) {
		int v = policed_gate(&pc.key, tcp_flags);
		if (v >= 0)
			return v;
	}
	if (kernel_flow(daddr, dport, proto))
		return pass_kernel_flow();
	if (ip->ttl <= 1)
		return pass();
	if (!policed)
		record(&pc);
	return deliver_routed(skb, dst, ip->ttl, STAT_FROM_PEER);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
