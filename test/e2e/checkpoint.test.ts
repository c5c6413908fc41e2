// Sleep mode checkpoint on a real cluster (a control plane and a worker):
// - sleep: the worker stopped, the control plane's daemons checkpointed with CRIU, every container
//   stopped; wake: the same daemons come back (the same process ids and API server identity,
//   restored, not started anew),
//   the objects are there, the API answers, the node is Ready, and the restored controller manager
//   and scheduler act on a new Deployment (their watches came back);
// - a checkpoint that cannot be restored falls back to a normal start, and the cluster still wakes.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CHECKPOINT, controlPlaneName, LABELS, varVolumeName } from '../../shared/contract.js';
import {
  docker,
  ensureTestImage,
  execInContainer,
  kubectlBinary,
  kubectlFor,
  LABEL_CLUSTER,
  NODE_IMAGE,
  removeByLabel,
  requireNodeImage,
  runVind,
  TEST_IMAGE,
  uniqueName,
  waitFor,
} from './helpers.js';

const cluster = uniqueName('e2e-checkpoint');
const controlPlane = controlPlaneName(cluster);
let scratch: string;
let kubectl: ReturnType<typeof kubectlFor>;

async function kubectlOk(args: string[], input?: string) {
  const result = await kubectl(args, input);
  expect(result.exitCode, result.stderr).toBe(0);
  return result.stdout;
}

/** The states of the containers that sleep: all but the front door. */
async function containerStates(): Promise<string[]> {
  const containers = await docker().listContainers({
    all: true,
    filters: { label: [`${LABEL_CLUSTER}=${cluster}`] },
  });
  return containers.filter((c) => c.Labels[LABELS.role] !== 'front-door').map((c) => c.State);
}

/** The control plane's daemons by name, with their process ids. */
async function daemonPids(): Promise<Record<string, number>> {
  // The command, not `comm`: that one is cut at 15 characters (kube-controller).
  const result = await execInContainer(controlPlane, ['ps', '-eo', 'pid=,args=']);
  expect(result.exitCode, result.stderr).toBe(0);
  const pids: Record<string, number> = {};
  for (const line of result.stdout.trim().split('\n')) {
    const [pid, command] = line.trim().split(/\s+/);
    const name = command?.split('/').at(-1);
    if (name && /^(kine|kube-(apiserver|controller-manager|scheduler))$/.test(name)) pids[name] = Number(pid);
  }
  return pids;
}

/**
 * The identity the API server made for itself when its process started (the holder of its lease in
 * kube-system), as renewed at or after `since`: a restored process keeps its identity, a new one makes
 * another. (Process ids say less: a fresh container hands out the same ones again.)
 */
async function apiServerIdentity(since = 0): Promise<string> {
  return waitFor(
    'an API server lease renewed since the wake',
    async () => {
      const out = await kubectlOk([
        'get',
        'leases',
        '-n',
        'kube-system',
        '-l',
        'apiserver.kubernetes.io/identity=kube-apiserver',
        '-o',
        'json',
      ]);
      const leases = (
        JSON.parse(out) as { items: { spec: { holderIdentity?: string; renewTime?: string } }[] }
      ).items
        .filter((l) => Date.parse(l.spec.renewTime ?? '') >= since)
        .sort((a, b) => Date.parse(b.spec.renewTime ?? '') - Date.parse(a.spec.renewTime ?? ''));
      return leases[0]?.spec.holderIdentity;
    },
    30_000,
    500,
  );
}

async function agentLog(): Promise<string> {
  const stream = await docker().getContainer(controlPlane).logs({ stdout: true, stderr: true });
  return stream.toString('utf8');
}

/** The duration a step line of the CLI shows (` ✓ wait for the API server (1.2s)`), in ms. */
function stepMs(output: string, step: string): number | undefined {
  const match = new RegExp(`✓ ${step} \\((\\d+(?:\\.\\d+)?)(ms|s)`).exec(output);
  if (!match) return undefined;
  return Number(match[1]) * (match[2] === 's' ? 1000 : 1);
}

describe('sleep mode checkpoint', () => {
  beforeAll(async () => {
    await requireNodeImage();
    await ensureTestImage();
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-checkpoint-'));
    const kubeconfig = join(scratch, 'kubeconfig');
    kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
    const created = await runVind(['create', cluster, '--workers', '1', '--image', NODE_IMAGE], {
      KUBECONFIG: kubeconfig,
    });
    expect(created.exitCode, created.stderr).toBe(0);
    await kubectlOk(['create', 'configmap', 'kept', '--from-literal=k=v']);
  }, 600_000);

  afterAll(async () => {
    await runVind(['delete', cluster]);
    await removeByLabel(cluster);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 180_000);

  it('checkpoints the control plane, stops everything, and wakes it restored with its objects', async () => {
    const before = await daemonPids();
    const identity = await apiServerIdentity();
    expect(Object.keys(before).sort()).toEqual([
      'kine',
      'kube-apiserver',
      'kube-controller-manager',
      'kube-scheduler',
    ]);
    // Started out of the way of what a fresh container runs before it restores them.
    for (const pid of Object.values(before)) expect(pid).toBeGreaterThan(CHECKPOINT.pidBase);

    const slept = await runVind(['sleep', cluster, '--mode', 'checkpoint']);
    expect(slept.exitCode, slept.stderr).toBe(0);
    expect(slept.stderr).toMatch(/✓ checkpoint the control plane \(.*4 daemons, \d+ MiB, dumped in \d+ms\)/);
    expect(new Set(await containerStates())).toEqual(new Set(['exited']));
    const listed = await runVind(['list', '--json']);
    const entry = (JSON.parse(listed.stdout) as { name: string; sleeping?: { mode: string } }[]).find(
      (c) => c.name === cluster,
    );
    expect(entry?.sleeping?.mode).toBe('checkpoint');

    const wokeAt = Date.now() - 1000;
    const woke = await runVind(['wake', cluster]);
    expect(woke.exitCode, woke.stderr).toBe(0);
    expect(woke.stderr).toContain(`Cluster "${cluster}" is awake (from checkpoint)`);
    expect(new Set(await containerStates())).toEqual(new Set(['running']));
    console.log(
      `checkpoint: sleep ${slept.stderr.match(/after (\S+):/)?.[1]}, wake: API ${stepMs(woke.stderr, 'wait for the API server')}ms ` +
        `after the start (${stepMs(woke.stderr, 'start 2 containers')}ms), nodes Ready ${stepMs(woke.stderr, 'wait for nodes Ready')}ms later; ` +
        `${woke.stderr.match(/awake \(from checkpoint\) in (\S+)/)?.[1]} in all`,
    );

    // The same processes, restored: a normal start would make an identity of its own.
    expect(await daemonPids()).toEqual(before);
    expect(await apiServerIdentity(wokeAt)).toBe(identity);
    const log = await agentLog();
    expect(log).toContain('restored the control plane from its checkpoint');
    expect(log).not.toContain('restoring the checkpoint failed');
    // Used once: the images are gone.
    expect((await execInContainer(controlPlane, ['test', '-e', CHECKPOINT.dir])).exitCode).not.toBe(0);

    expect(await kubectlOk(['get', 'configmap', 'kept', '-o', 'jsonpath={.data.k}'])).toBe('v');
    expect(await kubectlOk(['get', '--raw', '/readyz'])).toBe('ok');
    await kubectlOk(['wait', '--for=condition=Ready', 'node', '--all', '--timeout=60s']);
    // The restored controller manager makes the pod, the restored scheduler places it, the worker runs it.
    await kubectlOk(['create', 'deployment', 'after-wake', `--image=${TEST_IMAGE}`, '--', 'sleep', '100000']);
    await kubectlOk(['rollout', 'status', 'deployment/after-wake', '--timeout=120s']);
  });

  it('starts the control plane anew when its checkpoint cannot be restored', async () => {
    const before = await daemonPids();
    const identity = await apiServerIdentity();
    const slept = await runVind(['sleep', cluster, '--mode', 'checkpoint']);
    expect(slept.exitCode, slept.stderr).toBe(0);
    // The API server's memory taken away: criu cannot restore it.
    const damage = await docker().createContainer({
      Image: NODE_IMAGE,
      Entrypoint: ['sh', '-c', `rm ${CHECKPOINT.dir}/kube-apiserver/pages-*.img`],
      Labels: { [LABEL_CLUSTER]: cluster },
      HostConfig: { Binds: [`${varVolumeName(controlPlane)}:/var`] },
    });
    try {
      await damage.start();
      expect((await damage.wait()) as { StatusCode: number }).toMatchObject({ StatusCode: 0 });
    } finally {
      await damage.remove({ force: true });
    }

    const wokeAt = Date.now() - 1000;
    const woke = await runVind(['wake', cluster]);
    expect(woke.exitCode, woke.stderr).toBe(0);
    const log = await agentLog();
    expect(log).toMatch(
      /restoring the checkpoint failed, starting anew: criu could not restore kube-apiserver/,
    );
    const after = await daemonPids();
    expect(await apiServerIdentity(wokeAt)).not.toBe(identity);
    expect(Object.keys(after).sort()).toEqual(Object.keys(before).sort());
    expect((await execInContainer(controlPlane, ['test', '-e', CHECKPOINT.dir])).exitCode).not.toBe(0);
    expect(
      (await execInContainer(controlPlane, ['test', '-s', '/var/log/vind/criu-restore.log'])).exitCode,
    ).toBe(0);
    expect(await kubectlOk(['get', 'configmap', 'kept', '-o', 'jsonpath={.data.k}'])).toBe('v');
    await kubectlOk(['wait', '--for=condition=Ready', 'node', '--all', '--timeout=60s']);
  });
});
