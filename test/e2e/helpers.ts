// End-to-end test helpers that need vitest; everything else lives in test/support/workloads.ts,
// which the benchmarks share.

import { expect } from 'vitest';
import { kubectlBinary, kubectlFor, runVind } from '../support/workloads.js';

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
