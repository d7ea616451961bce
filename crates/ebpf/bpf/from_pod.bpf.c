// SPDX-License-Identifier: (Apache-2.0 OR GPL-2.0-only)
//
// weft's same-node fast path: a tc program on tcx ingress of the host side of each pod's
// veth, i.e. on the pod's egress. It takes only what it can deliver exactly as the kernel
// path would: an IPv4 packet from one local pod to another local pod, neither of them
// policed, is moved straight into the destination pod's namespace with bpf_redirect_peer
// (no bridge, no netfilter, no second backlog pass). Everything else — ARP, IPv6, broadcast,
// traffic to the node or off it, and every packet of a policed pod — returns TC_ACT_OK and
// continues down today's path (bridge/ptp, nftables policy, masquerade).
//
// The endpoint map is weftd's: it inserts each pod before its ADD returns and sets
// WEFT_EP_POLICED from its policy state. Both ends must be in the map, so a packet whose
// source address is not the pod's own (spoofed, or from a chained interface) never skips
// netfilter.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define WEFT_EP_POLICED 1u

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

// Decisions, per CPU: [0] redirected to a local pod, [1] passed to the kernel path.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
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
	return count(1, TC_ACT_OK);
}

static __always_inline int mac_eq(const __u8 *a, const __u8 *b)
{
	return a[0] == b[0] && a[1] == b[1] && a[2] == b[2] && a[3] == b[3] && a[4] == b[4] &&
	       a[5] == b[5];
}

// aya 0.14 refuses libbpf's SEC("tc"); "classifier" is the same program type.
SEC("classifier")
int weft_from_pod(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);

	if ((void *)(ip + 1) > data_end)
		return pass();
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return pass();

	__u32 daddr = ip->daddr;
	__u32 saddr = ip->saddr;
	struct weft_endpoint *dst = bpf_map_lookup_elem(&weft_endpoints, &daddr);
	if (!dst)
		return pass();
	struct weft_endpoint *src = bpf_map_lookup_elem(&weft_endpoints, &saddr);
	if (!src)
		return pass();
	if ((dst->flags | src->flags) & WEFT_EP_POLICED)
		return pass();

	// Addressed to the pod's own MAC: the two pods share a subnet (bridge mode, one block)
	// and the frame is delivered as the bridge would. Otherwise it was sent to the
	// gateway and is routed, as the kernel would route it: TTL down by one, and the
	// frame rewritten to come from the destination's gateway. A TTL that would expire is
	// left to the kernel, which answers with ICMP.
	if (!mac_eq(eth->h_dest, dst->mac)) {
		if (ip->ttl <= 1)
			return pass();
		// TTL is the high byte of the 16-bit word it shares with the protocol.
		__u16 old = bpf_htons((__u16)ip->ttl << 8);
		__u16 new = bpf_htons((__u16)(ip->ttl - 1) << 8);
		__u8 ttl = ip->ttl - 1;
		__u8 d[6], s[6];
		__builtin_memcpy(d, dst->mac, 6);
		__builtin_memcpy(s, dst->gw_mac, 6);
		if (bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old, new, 2))
			return pass();
		if (bpf_skb_store_bytes(skb, ETH_HLEN + offsetof(struct iphdr, ttl), &ttl, 1, 0))
			return pass();
		if (bpf_skb_store_bytes(skb, 0, d, 6, 0) || bpf_skb_store_bytes(skb, 6, s, 6, 0))
			return pass();
	}
	return count(0, bpf_redirect_peer(dst->ifindex, 0));
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
