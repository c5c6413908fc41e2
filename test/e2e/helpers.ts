// End-to-end test helpers that need vitest; everything else lives in test/support/workloads.ts,
// which the benchmarks share.

import { expect } from 'vitest';
import { nodeSecurityMode } from '../../cli/create/steps/check-host.js';
import { dockerRuntime } from '../../cli/runtime/docker-runtime.js';
import { encodeNodeEnv, LABELS, networkName } from '../../shared/contract.js';
import { clusterAddressPlan, pickClusterSubnet } from '../../shared/subnets.js';
import {
  execInContainer,
  kubectlBinary,
  kubectlFor,
  NODE_IMAGE,
  runVind,
  waitFor,
} from '../support/workloads.js';

export * from '../support/workloads.js';

/** Creates a one-worker cluster on an external datastore and writes one ConfigMap through it. */
export async function createClusterOnDatastore(
  cluster: string,
  datastoreUrl: string,
  kubeconfig: string,
  configMap: string,
): Promise<void> {
  const created = await runVind(['create', cluster, '--workers', '1', '--datastore', datastoreUrl], {
    KUBECONFIG: kubeconfig,
  });
  expect(created.exitCode, created.stderr).toBe(0);
  const kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
  const made = await kubectl(['create', 'configmap', configMap, '--from-literal=k=v']);
  expect(made.exitCode, made.stderr).toBe(0);
}

/**
 * A worker with no cluster to join, made as the provider makes every node, on a network of its own
 * labelled with `cluster`: containerd and the preloaded images, nothing else. Resolves once its agent
 * reports the runtime ready.
 */
export async function startBareRuntimeNode(cluster: string, name: string): Promise<void> {
  const runtime = dockerRuntime();
  const subnet = pickClusterSubnet(await runtime.usedSubnets());
  const plan = clusterAddressPlan(subnet);
  const network = networkName(cluster);
  await runtime.createNetwork({
    name: network,
    subnet,
    gateway: plan.gateway,
    ipRange: plan.dynamicRange,
    labels: { [LABELS.cluster]: cluster },
  });
  await runtime.runNode({
    name,
    cluster,
    role: 'worker',
    image: NODE_IMAGE,
    securityMode: await nodeSecurityMode(runtime, NODE_IMAGE),
    network,
    address: plan.worker(0),
    env: encodeNodeEnv({
      role: 'worker',
      nodeName: name,
      nodeIp: plan.worker(0),
      podSubnet: '10.244.0.0/16',
      serviceSubnet: '10.96.0.0/16',
      cni: 'default',
      labels: {},
      join: { kind: 'none' },
    }),
    ports: [],
    labels: {},
  });
  await waitForRuntimeReady(name);
}

/** Waits for a bare runtime node's agent to report ready; a timeout shows the node's last log lines. */
export async function waitForRuntimeReady(name: string): Promise<void> {
  try {
    await waitFor(
      'node-agent to report the runtime ready',
      async () =>
        (await execInContainer(name, ['sh', '-c', `grep -q '"phase":"ready"' /run/vind/status`])).exitCode ===
        0
          ? true
          : undefined,
      90_000,
    );
  } catch (error) {
    throw new Error(`${(error as Error).message}\n${await dockerRuntime().logs(name, 40)}`, { cause: error });
  }
}
