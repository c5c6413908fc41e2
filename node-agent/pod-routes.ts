// Routes to the pod network of every node, kept in step with the Node objects by a watch. Workers
// need them for pod-to-pod traffic across nodes; the control plane needs them so the API server
// reaches pods: pods/proxy, services/proxy, admission and conversion webhooks and aggregated APIs
// (with --enable-aggregator-routing the API server dials a Service's endpoints, never its ClusterIP).

import { execa } from 'execa';
import { internalIp, type KubeNode, type KubeTarget, watchCollection } from '../shared/kubernetes.js';
import { log } from './log.js';
import { reconciler } from './reconciler.js';

/** podCIDR -> node address for every node but `self` that has both. */
export function wantedPodRoutes(nodes: KubeNode[], self?: string): Map<string, string> {
  const wanted = new Map<string, string>();
  for (const node of nodes) {
    const address = internalIp(node);
    if (node.metadata.name === self || !address) continue;
    for (const cidr of node.spec.podCIDRs ?? (node.spec.podCIDR ? [node.spec.podCIDR] : [])) {
      // IPv4 only, as the rest of the pod network.
      if (cidr.includes('.')) wanted.set(cidr, address);
    }
  }
  return wanted;
}

/**
 * Watches the nodes and keeps one route per podCIDR via its node's address. Changes are applied one
 * pass at a time against the newest view; a pass that fails is tried again two seconds later.
 */
export function keepPodRoutes(target: KubeTarget, self: string | undefined, signal: AbortSignal): void {
  const installed = new Map<string, string>();
  let desired = new Map<string, string>();
  const kick = reconciler(
    async () => {
      for (const [cidr, via] of desired) {
        if (installed.get(cidr) === via) continue;
        await execa('ip', ['route', 'replace', cidr, 'via', via]);
        installed.set(cidr, via);
        log(`route ${cidr} via ${via}`);
      }
      for (const cidr of [...installed.keys()]) {
        if (desired.has(cidr)) continue;
        await execa('ip', ['route', 'del', cidr], { reject: false });
        installed.delete(cidr);
        log(`route ${cidr} removed`);
      }
    },
    { logPrefix: 'routes', retryMs: 2000, signal },
  );

  watchCollection<KubeNode>(
    target,
    '/api/v1/nodes',
    (nodes) => {
      desired = wantedPodRoutes(nodes, self);
      kick();
    },
    (error) => log(`watching nodes: ${error.message.split('\n')[0]}`),
    signal,
  );
}
