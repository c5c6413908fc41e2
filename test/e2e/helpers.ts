// Shared by the end-to-end tests: run the real CLI, and find and remove what a test created by label.

import { join } from 'node:path';
import { execa } from 'execa';
import { docker, LABEL_CLUSTER } from '../../cli/docker.js';
import { DEFAULT_KUBERNETES_VERSION } from '../../images/recipe.js';

export const PROJECT_ROOT = join(import.meta.dirname, '..', '..');
export const CLI = join(PROJECT_ROOT, 'dist', 'cli', 'main.js');
export const NODE_IMAGE = process.env.VIND_TEST_IMAGE ?? `vind/node:${DEFAULT_KUBERNETES_VERSION}`;

export function runVind(args: string[], env: Record<string, string> = {}) {
  return execa('node', [CLI, ...args], { env, reject: false, stdin: 'ignore', timeout: 600_000 });
}

export function uniqueName(prefix: string): string {
  return `${prefix}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Removes every container, volume and network labelled with the cluster name. */
export async function removeByLabel(cluster: string): Promise<void> {
  const filter = { label: [`${LABEL_CLUSTER}=${cluster}`] };
  const containers = await docker().listContainers({ all: true, filters: filter });
  await Promise.all(
    containers.map((c) =>
      docker()
        .getContainer(c.Id)
        .remove({ force: true, v: true })
        .catch(() => undefined),
    ),
  );
  const volumes = (await docker().listVolumes({ filters: filter })).Volumes ?? [];
  await Promise.all(
    volumes.map((v) =>
      docker()
        .getVolume(v.Name)
        .remove({ force: true })
        .catch(() => undefined),
    ),
  );
  const networks = await docker().listNetworks({ filters: filter });
  await Promise.all(
    networks.map((n) =>
      docker()
        .getNetwork(n.Id)
        .remove()
        .catch(() => undefined),
    ),
  );
}

export async function requireNodeImage(): Promise<void> {
  try {
    await docker().getImage(NODE_IMAGE).inspect();
  } catch {
    throw new Error(`${NODE_IMAGE} is missing: build it with \`node dist/cli/main.js image build\``);
  }
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs: number,
  intervalMs = 250,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
