// SPDX-License-Identifier: GPL-2.0
/* Ingress guard on the underlay interface: VXLAN to our port from an address that holds no lease is
 * dropped before the vxlan device sees it (flannel listens on all addresses and accepts anyone).
 * Two hooks, one verdict: native XDP for NICs whose driver supports it; tc on veth and other virtual
 * devices, where native XDP forces packets off the GRO path (measured: -70% TCP throughput). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include "underlay_guard.h"

SEC("tc")
int fl_guard_tc(struct __sk_buff *skb)
{
	return fl_guard_skb(skb);
}

SEC("xdp")
int fl_guard_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	return guard(data, data_end, data_end - data, 0) == DROP ? XDP_DROP : XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
