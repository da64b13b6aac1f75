// SPDX-License-Identifier: GPL-2.0
/* tc ingress on flannel.1 (external mode) when the pod fast path is off: the checks alone, then the
 * normal stack (routing to cni0). */
#include "vtep_ingress.h"

SEC("tc")
int fl_vxlan_ingress(struct __sk_buff *skb)
{
	return fl_vtep_accept(skb);
}

char LICENSE[] SEC("license") = "GPL";
