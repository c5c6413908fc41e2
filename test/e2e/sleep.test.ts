// Sleep and wake on a real cluster (a control plane and a worker):
// - pause: every container frozen; wake thaws them and a pod that counts in memory goes on from where
//   it was, in the same container, not restarted;
// - stop: every container stopped; wake brings the cluster back Ready with its objects and a file a
//   pod wrote on the node;
// - auto-sleep: with no client for its idle time the front door has the cluster paused, and the next
//   kubectl call wakes it and is answered; a kubectl call to a stopped cluster is answered too;
// - bad input is refused in one line and changes nothing; a sleeping cluster can be deleted.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LABELS, sleepRecordName } from '../../shared/contract.js';
import {
  docker,
  ensureTestImage,
  kubectlBinary,
  kubectlFor,
  LABEL_CLUSTER,
  objectsLeft,
  removeByLabel,
  requireNodeImage,
  runVind,
  TEST_IMAGE,
  uniqueName,
  waitFor,
} from './helpers.js';

const cluster = uniqueName('e2e-sleep');
let scratch: string;
let kubeconfig: string;
let kubectl: ReturnType<typeof kubectlFor>;

interface Pod {
  metadata: { name: string };
  status: { containerStatuses?: { containerID?: string; restartCount: number; ready: boolean }[] };
}

async function kubectlOk(args: string[], input?: string) {
  const result = await kubectl(args, input);
  expect(result.exitCode, result.stderr).toBe(0);
  return result.stdout;
}

async function pod(name: string): Promise<Pod> {
  return JSON.parse(await kubectlOk(['get', 'pod', name, '-o', 'json'])) as Pod;
}

/** The numbers the counter pod printed, in order. */
async function counted(): Promise<number[]> {
  const logs = await kubectlOk(['logs', 'counter']);
  return logs
    .split('\n')
    .filter((line) => /^\d+$/.test(line))
    .map(Number);
}

/** The states of the containers that sleep: all but the front door, which stays up to wake them. */
async function containerStates(): Promise<string[]> {
  const containers = await docker().listContainers({
    all: true,
    filters: { label: [`${LABEL_CLUSTER}=${cluster}`] },
  });
  return containers.filter((c) => c.Labels[LABELS.role] !== 'front-door').map((c) => c.State);
}

async function frontDoorState(): Promise<string | undefined> {
  const [door] = await docker().listContainers({
    all: true,
    filters: { label: [`${LABEL_CLUSTER}=${cluster}`, `${LABELS.role}=front-door`] },
  });
  return door?.State;
}

interface Listed {
  name: string;
  state: string;
  sleeping?: { mode: string; since: string };
  sleepAfter?: string;
}

async function listed(): Promise<Listed | undefined> {
  const result = await runVind(['list', '--json']);
  expect(result.exitCode, result.stderr).toBe(0);
  return (JSON.parse(result.stdout) as Listed[]).find((c) => c.name === cluster);
}

function podManifest(name: string, script: string, extra: Record<string, unknown> = {}) {
  return JSON.stringify({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name },
    spec: {
      terminationGracePeriodSeconds: 1,
      containers: [{ name: 'main', image: TEST_IMAGE, command: ['sh', '-c', script], ...extra }],
    },
  });
}

describe('sleep and wake', () => {
  beforeAll(async () => {
    await requireNodeImage();
    await ensureTestImage();
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-sleep-'));
    kubeconfig = join(scratch, 'kubeconfig');
    kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
    const created = await runVind(['create', cluster, '--workers', '1', '--sleep-after', '30m'], {
      KUBECONFIG: kubeconfig,
    });
    expect(created.exitCode, created.stderr).toBe(0);
    await kubectlOk(
      ['apply', '-f', '-'],
      podManifest('counter', 'i=0; while true; do i=$((i+1)); echo $i; sleep 0.2; done'),
    );
    await kubectlOk(
      ['apply', '-f', '-'],
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'writer' },
        spec: {
          terminationGracePeriodSeconds: 1,
          containers: [
            {
              name: 'main',
              image: TEST_IMAGE,
              command: ['sh', '-c', 'echo kept > /data/file && exec sleep 100000'],
              volumeMounts: [{ name: 'data', mountPath: '/data' }],
            },
          ],
          volumes: [{ name: 'data', hostPath: { path: '/var/local/vind-e2e', type: 'DirectoryOrCreate' } }],
        },
      }),
    );
    await kubectlOk(['create', 'configmap', 'kept', '--from-literal=k=v']);
    await kubectlOk(['wait', '--for=condition=Ready', 'pod/counter', 'pod/writer', '--timeout=120s']);
  }, 600_000);

  afterAll(async () => {
    await runVind(['delete', cluster]);
    await removeByLabel(cluster);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 180_000);

  it('pauses every container and wakes them with every pod as it was, counting on', async () => {
    await waitFor(
      'the counter to count',
      async () => ((await counted()).length >= 3 ? true : undefined),
      30_000,
    );
    const before = (await pod('counter')).status.containerStatuses![0]!;
    const slept = await runVind(['sleep', cluster, '--mode', 'pause']);
    expect(slept.exitCode, slept.stderr).toBe(0);
    expect(new Set(await containerStates())).toEqual(new Set(['paused']));
    expect(await frontDoorState()).toBe('running');
    expect((await listed())?.sleeping?.mode).toBe('pause');
    expect((await listed())?.state).toBe('paused');
    await new Promise((resolve) => setTimeout(resolve, 3000));

    const woke = await runVind(['wake', cluster]);
    expect(woke.exitCode, woke.stderr).toBe(0);
    expect(woke.stderr).toContain(`Cluster "${cluster}" is awake (from pause)`);
    expect(new Set(await containerStates())).toEqual(new Set(['running']));
    expect((await listed())?.sleeping).toBeUndefined();
    const after = (await pod('counter')).status.containerStatuses![0]!;
    expect(after.containerID).toBe(before.containerID);
    expect(after.restartCount).toBe(before.restartCount);
    // The count goes on where it stopped: one run of numbers, each one more than the last.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const numbers = await counted();
    expect(numbers[0]).toBe(1);
    expect(numbers.every((n, i) => n === i + 1)).toBe(true);
    // Awake again, the containers come back after an engine restart as before.
    const restartPolicies = await Promise.all(
      (await docker().listContainers({ filters: { label: [`${LABEL_CLUSTER}=${cluster}`] } })).map(
        async (c) => (await docker().getContainer(c.Id).inspect()).HostConfig.RestartPolicy?.Name,
      ),
    );
    expect(new Set(restartPolicies)).toEqual(new Set(['unless-stopped']));
  });

  it('refuses bad input in one line and changes nothing', async () => {
    const cases: [string[], string][] = [
      [['wake', cluster], `error: cluster "${cluster}" is not asleep: it is running`],
      [['sleep', 'e2e-sleep-missing'], 'error: cluster "e2e-sleep-missing" does not exist: see `vind list`'],
      [['sleep', cluster, '--mode', 'nap'], 'error: unknown sleep mode "nap": use pause, stop, checkpoint'],
      [['sleep', cluster, '--after', '-5m'], 'error: invalid --after: invalid idle time "-5m"'],
      [['sleep', cluster, '--after', 'soon'], 'error: invalid --after: invalid idle time "soon"'],
      [['sleep', cluster, '--after', '1s'], 'error: invalid --after: idle time "1s" is too short'],
    ];
    for (const [args, message] of cases) {
      const result = await runVind(args);
      expect(result.exitCode, args.join(' ')).not.toBe(0);
      expect(result.stderr.trim().split('\n')).toHaveLength(1);
      expect(result.stderr).toContain(message);
    }
    expect(new Set(await containerStates())).toEqual(new Set(['running']));
    expect((await listed())?.sleeping).toBeUndefined();
    expect((await listed())?.sleepAfter).toBe('30m');
  });

  it('pauses after its idle time without a client, and the next kubectl call wakes it and is answered', async () => {
    const before = (await pod('counter')).status.containerStatuses![0]!;
    const set = await runVind(['sleep', cluster, '--after', '6s']);
    expect(set.exitCode, set.stderr).toBe(0);
    expect(set.stderr).toContain('sleeps (pause) after 6s without a client');
    expect((await listed())?.sleepAfter).toBe('6s');
    // Only `vind list` from here on: it reads Docker, not the API, so it keeps nothing awake.
    await waitFor(
      'the cluster to pause by itself',
      async () => ((await listed())?.sleeping?.mode === 'pause' ? true : undefined),
      60_000,
      500,
    );
    expect(new Set(await containerStates())).toEqual(new Set(['paused']));

    // A plain kubectl call, with its default timeouts, wakes it and is answered.
    const started = Date.now();
    expect(await kubectlOk(['get', 'configmap', 'kept', '-o', 'jsonpath={.data.k}'])).toBe('v');
    console.log(`kubectl answered from pause in ${Date.now() - started}ms`);
    expect(new Set(await containerStates())).toEqual(new Set(['running']));
    expect((await listed())?.sleeping).toBeUndefined();
    const after = (await pod('counter')).status.containerStatuses![0]!;
    expect(after.containerID).toBe(before.containerID);
    expect(after.restartCount).toBe(before.restartCount);

    const never = await runVind(['sleep', cluster, '--after', 'never']);
    expect(never.exitCode, never.stderr).toBe(0);
    expect((await listed())?.sleepAfter).toBeUndefined();
  });

  it('answers a kubectl call to a stopped cluster, waking it', async () => {
    const slept = await runVind(['sleep', cluster, '--mode', 'stop']);
    expect(slept.exitCode, slept.stderr).toBe(0);
    expect(new Set(await containerStates())).toEqual(new Set(['exited']));
    const started = Date.now();
    const pods = JSON.parse(await kubectlOk(['get', 'pods', '-o', 'json'])) as { items: Pod[] };
    console.log(`kubectl answered from stop in ${Date.now() - started}ms`);
    expect(pods.items.map((p) => p.metadata.name).sort()).toEqual(['counter', 'writer']);
    expect((await listed())?.sleeping).toBeUndefined();
    await kubectlOk(['wait', '--for=condition=Ready', 'pod/writer', '--timeout=120s']);
  });

  it('stops every container and wakes the cluster Ready with its objects and files', async () => {
    const slept = await runVind(['sleep', cluster, '--mode', 'stop']);
    expect(slept.exitCode, slept.stderr).toBe(0);
    expect(new Set(await containerStates())).toEqual(new Set(['exited']));
    const entry = await listed();
    expect(entry?.state).toBe('stopped');
    expect(entry?.sleeping?.mode).toBe('stop');
    const volumes = await docker().listVolumes({ filters: { label: [`${LABELS.sleepMode}=stop`] } });
    expect(volumes.Volumes?.map((v) => v.Name)).toContain(sleepRecordName(cluster));

    const woke = await runVind(['wake', cluster]);
    expect(woke.exitCode, woke.stderr).toBe(0);
    expect(woke.stderr).toContain('wait for CoreDNS');
    expect(await kubectlOk(['get', 'configmap', 'kept', '-o', 'jsonpath={.data.k}'])).toBe('v');
    await kubectlOk(['wait', '--for=condition=Ready', 'pod/writer', '--timeout=120s']);
    expect(await kubectlOk(['exec', 'writer', '--', 'cat', '/data/file'])).toBe('kept');
    expect((await listed())?.sleeping).toBeUndefined();
  });

  it('deletes a sleeping cluster and everything it made', async () => {
    const slept = await runVind(['sleep', cluster]);
    expect(slept.exitCode, slept.stderr).toBe(0);
    const deleted = await runVind(['delete', cluster]);
    expect(deleted.exitCode, deleted.stderr).toBe(0);
    expect(await objectsLeft(cluster)).toBe(0);
  });
});
