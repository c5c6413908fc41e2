// Two clusters at once, isolated from each other; a restart of every container of one keeps its
// objects and brings it back Ready; delete leaves no container, volume, network or context behind.

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Readable } from 'node:stream';
import {
  docker,
  execInContainer,
  kubectlBinary,
  kubectlFor,
  LABEL_CLUSTER,
  objectsLeft,
  removeByLabel,
  requireNodeImage,
  runVind,
  uniqueName,
  waitFor,
} from './helpers.js';

const a = uniqueName('e2e-a');
const b = uniqueName('e2e-b');
let scratch: string;
let kubeconfig: string;
let env: Record<string, string>;

async function address(container: string): Promise<string> {
  const info = await docker().getContainer(container).inspect();
  return Object.values(info.NetworkSettings.Networks)[0]!.IPAddress;
}

describe('cluster lifecycle', () => {
  beforeAll(async () => {
    await requireNodeImage();
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-life-'));
    kubeconfig = join(scratch, 'kubeconfig');
    env = { KUBECONFIG: kubeconfig };
    const [first, second] = await Promise.all([
      runVind(['create', a, '--workers', '1'], env),
      runVind(['create', b, '--workers', '1'], env),
    ]);
    expect(first.exitCode, first.stderr).toBe(0);
    expect(second.exitCode, second.stderr).toBe(0);
  });

  afterAll(async () => {
    await removeByLabel(a);
    await removeByLabel(b);
    await rm(scratch, { recursive: true, force: true });
  });

  it('lists both clusters with their endpoints', async () => {
    const result = await runVind(['list', '--json']);
    const clusters = JSON.parse(result.stdout) as {
      name: string;
      state: string;
      nodes: number;
      endpoint: string;
    }[];
    for (const name of [a, b]) {
      expect(clusters.find((c) => c.name === name)).toMatchObject({
        state: 'running',
        nodes: 2,
        kubernetesVersion: expect.stringMatching(/^v1\.\d+\.\d+$/),
        endpoint: expect.stringMatching(/^https:\/\/127\.0\.0\.1:\d+$/),
      });
    }
  });

  it('started one image cache for both at once, attached to both networks', async () => {
    const caches = await docker().listContainers({ all: true, filters: { name: ['^/vind-image-cache$'] } });
    expect(caches).toHaveLength(1);
    const info = await docker().getContainer('vind-image-cache').inspect();
    expect(info.State.Running).toBe(true);
    expect(Object.keys(info.NetworkSettings.Networks).sort()).toEqual([`vind-${a}`, `vind-${b}`].sort());
  });

  it('brings a cache removed by hand back for every cluster at the next create', async () => {
    await docker().getContainer('vind-image-cache').remove({ force: true, v: true });
    const c = uniqueName('e2e-c');
    try {
      const created = await runVind(['create', c, '--workers', '0'], env);
      expect(created.exitCode, created.stderr).toBe(0);
      const info = await docker().getContainer('vind-image-cache').inspect();
      expect(Object.keys(info.NetworkSettings.Networks).sort()).toEqual(
        [`vind-${a}`, `vind-${b}`, `vind-${c}`].sort(),
      );
      // The tokens of the clusters that were there came back with it, next to the new one's.
      const tokens = await execInContainer('vind-image-cache', ['ls', '/var/lib/vind-cache/tokens']);
      expect(tokens.stdout.split('\n').filter(Boolean).sort()).toEqual([a, b, c].sort());
    } finally {
      const deleted = await runVind(['delete', c], env);
      expect(deleted.exitCode, deleted.stderr).toBe(0);
    }
  });

  it('keeps the clusters apart: own nodes, own networks, no route between them', async () => {
    const kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
    const nodesA = await kubectl(['--context', `vind-${a}`, 'get', 'nodes', '-o', 'name']);
    const nodesB = await kubectl(['--context', `vind-${b}`, 'get', 'nodes', '-o', 'name']);
    expect(nodesA.stdout.trim()).toBe(`node/${a}-worker`);
    expect(nodesB.stdout.trim()).toBe(`node/${b}-worker`);
    const target = await address(`${b}-control-plane`);
    const probe = await execInContainer(`${a}-worker`, [
      'timeout',
      '3',
      'bash',
      '-c',
      `exec 3<>/dev/tcp/${target}/6443`,
    ]);
    expect(probe.exitCode).not.toBe(0);
    // The same probe inside cluster B succeeds, so the failure above is isolation, not a broken probe.
    const inside = await execInContainer(`${b}-worker`, [
      'timeout',
      '3',
      'bash',
      '-c',
      `exec 3<>/dev/tcp/${target}/6443`,
    ]);
    expect(inside.exitCode).toBe(0);
  });

  it('prints an internal kubeconfig that works from the cluster network', async () => {
    const result = await runVind(['kubeconfig', a, '--internal']);
    expect(result.stdout).toContain(`server: https://${a}-control-plane:6443`);
    expect(result.stdout).not.toContain('insecure-skip-tls-verify');
    // Used from a container on the cluster network, with the certificate checked against the cluster CA.
    const inside = await execInContainer(
      `${a}-worker`,
      ['sh', '-c', 'cat > /tmp/internal.conf && kubectl --kubeconfig /tmp/internal.conf get nodes -o name'],
      Readable.from([result.stdout]),
    );
    expect(inside.exitCode, inside.stderr).toBe(0);
    expect(inside.stdout.trim()).toBe(`node/${a}-worker`);
  });

  it('comes back Ready with its objects after every container restarts', async () => {
    const kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
    const context = ['--context', `vind-${a}`];
    const made = await kubectl([...context, 'create', 'configmap', 'survivor', '--from-literal=key=value']);
    expect(made.exitCode, made.stderr).toBe(0);

    const containers = await docker().listContainers({ filters: { label: [`${LABEL_CLUSTER}=${a}`] } });
    const restartedAt = Date.now();
    await Promise.all(containers.map((c) => docker().getContainer(c.Id).restart({ t: 10 })));

    // Ready as reported after the restart, not the status written before it.
    await waitFor(
      'the restarted node to report Ready',
      async () => {
        const result = await kubectl([
          ...context,
          'get',
          'nodes',
          '-o',
          'jsonpath={.items[0].status.conditions[?(@.type=="Ready")].status} {.items[0].status.conditions[?(@.type=="Ready")].lastHeartbeatTime}',
        ]);
        const [status, heartbeat] = result.stdout.trim().split(' ');
        return status === 'True' && Date.parse(heartbeat ?? '') >= restartedAt - 1000 ? true : undefined;
      },
      180_000,
      1000,
    );
    // New work runs on the restarted node: a Deployment of a preloaded image rolls out.
    const deployed = await kubectl([
      ...context,
      'create',
      'deployment',
      'after-restart',
      '--image=vind.dev/pause:3.10',
    ]);
    expect(deployed.exitCode, deployed.stderr).toBe(0);
    const rollout = await kubectl([
      ...context,
      'rollout',
      'status',
      'deployment/after-restart',
      '--timeout=120s',
    ]);
    expect(rollout.exitCode, rollout.stderr).toBe(0);
    const kept = await kubectl([...context, 'get', 'configmap', 'survivor', '-o', 'jsonpath={.data.key}']);
    expect(kept.stdout).toBe('value');
    // The node's addresses are fixed: the restarted containers are where they were.
    expect((await runVind(['list', '--json'])).stdout).toContain(a);
  });

  it('deletes both clusters and everything they created', async () => {
    const result = await runVind(['delete', a, b], env);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(await objectsLeft(a)).toBe(0);
    expect(await objectsLeft(b)).toBe(0);
    const text = await readFile(kubeconfig, 'utf8');
    expect(text).not.toContain(`vind-${a}`);
    expect(text).not.toContain(`vind-${b}`);
  });
});
