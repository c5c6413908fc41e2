// Packets for the pod or Service network that nothing in the cluster routes must fail inside the
// node, at once, and never follow the container's default route to the Docker host and from there
// off the machine (the host would send them to its own default gateway: a LAN router, a cloud VPC).
// Installed before any Kubernetes daemon starts, on every node and on the control plane.
//
// Pod network: an `unreachable` route for the whole pod CIDR. Every real destination has a more
// specific route (this node's podCIDR on the CNI bridge, other nodes' podCIDRs via their address),
// which wins by prefix length; anything else gets "no route to host" from the kernel.
//
// Service network: a route would break ClusterIPs for the kubelet and hostNetwork pods, because a
// local packet is routed before kube-proxy's DNAT rewrites its destination, and an unreachable route
// fails it right there. So the check is a filter rule instead, which sees the packet after DNAT: a
// packet still addressed to the Service CIDR was not translated by kube-proxy (no such Service, no
// port, or kube-proxy not running yet) and is rejected.

import { execa } from 'execa';
import { log } from './log.js';

export const SAFETY_CHAIN = 'VIND-UNROUTED';

export interface ClusterSubnets {
  podSubnet: string;
  serviceSubnet: string;
}

/** The `ip` and `iptables` invocations of the safety net, each idempotent or made so by its caller. */
export function safetyNetPlan(subnets: ClusterSubnets): {
  routes: string[][];
  chainRules: string[][];
  jumps: { chain: string; rule: string[] }[];
} {
  return {
    routes: [['route', 'replace', 'unreachable', subnets.podSubnet]],
    chainRules: [['-d', subnets.serviceSubnet, '-j', 'REJECT', '--reject-with', 'icmp-net-unreachable']],
    jumps: [
      { chain: 'OUTPUT', rule: ['-j', SAFETY_CHAIN] },
      { chain: 'FORWARD', rule: ['-j', SAFETY_CHAIN] },
    ],
  };
}

async function run(command: string, args: string[]): Promise<void> {
  const result = await execa(command, args, { reject: false });
  if (result.exitCode !== 0) {
    throw new Error(`safety net: ${command} ${args.join(' ')}: ${result.stderr.trim() || result.exitCode}`);
  }
}

export async function installSafetyNet(subnets: ClusterSubnets): Promise<void> {
  const plan = safetyNetPlan(subnets);
  for (const route of plan.routes) await run('ip', route);
  // A restarted node keeps its netns: create the chain once, and rewrite its rules every time.
  await execa('iptables', ['-N', SAFETY_CHAIN], { reject: false });
  await run('iptables', ['-F', SAFETY_CHAIN]);
  for (const rule of plan.chainRules) await run('iptables', ['-A', SAFETY_CHAIN, ...rule]);
  for (const { chain, rule } of plan.jumps) {
    const present = await execa('iptables', ['-C', chain, ...rule], { reject: false });
    if (present.exitCode !== 0) await run('iptables', ['-I', chain, '1', ...rule]);
  }
  log(`safety net: ${subnets.podSubnet} and ${subnets.serviceSubnet} refused unless routed in the cluster`);
}
