// The worker's half of LoadBalancer Services: the addresses the controller gives this node (the
// announcements ConfigMap) go on its eth0 as /32s, each followed by gratuitous ARP so the host and
// the other containers on the cluster network learn the new owner at once; the ones taken away are
// removed. kube-proxy's rules for status.loadBalancer.ingress do the rest, in the kernel.

import { execa } from 'execa';
import { LOAD_BALANCER } from '../../shared/contract.js';
import { type KubeTarget, watchCollection } from '../../shared/kubernetes.js';
import { log } from '../log.js';
import { reconciler } from '../reconciler.js';

const INTERFACE = 'eth0';

interface AnnouncementsMap {
  metadata: { name: string; namespace: string };
  data?: Record<string, string>;
}

/** The addresses of `data` that `node` announces. */
export function addressesOf(data: Record<string, string> | undefined, node: string): Set<string> {
  return new Set(Object.entries(data ?? {}).flatMap(([address, owner]) => (owner === node ? [address] : [])));
}

/**
 * The /32 addresses on the interface: LoadBalancer addresses put there by this announcer (the node's
 * own address is the cluster network's /24).
 */
export function announcedAddresses(ipAddrOutput: string): Set<string> {
  const found = new Set<string>();
  for (const match of ipAddrOutput.matchAll(/\binet (\d+\.\d+\.\d+\.\d+)\/32\b/g)) found.add(match[1]!);
  return found;
}

async function announced(): Promise<Set<string>> {
  const { stdout } = await execa('ip', ['-4', '-o', 'addr', 'show', 'dev', INTERFACE]);
  return announcedAddresses(stdout);
}

async function take(address: string): Promise<void> {
  await execa('ip', ['addr', 'replace', `${address}/32`, 'dev', INTERFACE]);
  // Unsolicited ARP: neighbours that knew another owner switch now instead of when their entry ages.
  // Three, a second apart (arping's pace), for a host that was busy when the first came.
  void execa('arping', ['-U', '-c', '3', '-I', INTERFACE, address], { reject: false });
}

export function announceLoadBalancers(target: KubeTarget, node: string, signal: AbortSignal): void {
  let wanted = new Set<string>();
  const kick = reconciler(
    async () => {
      const have = await announced();
      for (const address of wanted) {
        if (have.has(address)) continue;
        await take(address);
        log(`load balancer: announcing ${address}`);
      }
      for (const address of have) {
        if (wanted.has(address)) continue;
        await execa('ip', ['addr', 'del', `${address}/32`, 'dev', INTERFACE], { reject: false });
        log(`load balancer: no longer announcing ${address}`);
      }
    },
    { logPrefix: 'load balancer', retryMs: 1000, signal },
  );
  const { namespace, name } = LOAD_BALANCER.announcements;
  watchCollection<AnnouncementsMap>(
    target,
    `/api/v1/namespaces/${namespace}/configmaps?fieldSelector=metadata.name%3D${name}`,
    (maps) => {
      wanted = addressesOf(maps[0]?.data, node);
      kick();
    },
    (error) => log(`load balancer: watching announcements: ${error.message.split('\n')[0]}`),
    signal,
  );
}
