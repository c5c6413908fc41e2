// Sleep and wake, measured on one cluster of 1 control plane + 2 workers with a workload running
// (a Deployment of two counting pods), made for the run and deleted at the end:
//
//   node dist/bench/sleep.js [--runs 3]     per mode (pause, stop, checkpoint): sleep time, wake time to the API answering
//                                           and to every node and pod Ready, and the cluster's
//                                           memory and CPU awake-idle versus asleep; then per mode a
//                                           wake on demand: a plain `kubectl get pods` to the sleeping
//                                           cluster, timed until it is answered
//   node dist/bench/sleep.js --soak [--pauses 100] [--stops 20]
//                                           that many pause/wake and stop/wake cycles in a row:
//                                           failures, objects lost, and the wake times' spread
//
// Figures only; nothing here asserts a time.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatDuration } from '../cli/progress.js';
import {
  apiReady,
  isNodeReady,
  type KubeNode,
  kubeGet,
  type KubeTarget,
  targetFromKubeconfig,
} from '../shared/kubernetes.js';
import { readFile } from 'node:fs/promises';
import {
  docker,
  ensureTestImage,
  kubectlBinary,
  kubectlFor,
  LABEL_CLUSTER,
  removeByLabel,
  runVind,
  TEST_IMAGE,
} from '../test/support/workloads.js';

function option(name: string, fallback: number): number {
  const index = process.argv.indexOf(name);
  return index >= 0 ? Number(process.argv[index + 1]) : fallback;
}

const soak = process.argv.includes('--soak');
const runs = option('--runs', 3);
const pauses = option('--pauses', 100);
const stops = option('--stops', 20);
const cluster = `bench-sleep-${process.pid}`;
const OBJECTS = 50;

let kubeconfig = '';
let target: KubeTarget;
/** The API server at the control plane's own address: a look that does not go through the front door, so it wakes nothing. */
let direct: KubeTarget;
let kubectl: ReturnType<typeof kubectlFor>;

async function vind(args: string[]): Promise<number> {
  const started = performance.now();
  const result = await runVind(args, { KUBECONFIG: kubeconfig });
  if (result.exitCode !== 0)
    throw new Error(`vind ${args.join(' ')}: ${result.stderr.trim().split('\n').at(-1)}`);
  return performance.now() - started;
}

/** Sum over the cluster's containers: memory in use without the page cache, and CPU seconds so far. */
async function usage(): Promise<{ memoryMiB: number; cpuSeconds: number }> {
  let memory = 0;
  let cpu = 0;
  const containers = await docker().listContainers({ filters: { label: [`${LABEL_CLUSTER}=${cluster}`] } });
  for (const c of containers) {
    const stats = (await docker().getContainer(c.Id).stats({ stream: false })) as unknown as {
      memory_stats: { usage?: number; stats?: Record<string, number> };
      cpu_stats: { cpu_usage: { total_usage: number } };
    };
    const s = stats.memory_stats.stats ?? {};
    memory += (stats.memory_stats.usage ?? 0) - (s.inactive_file ?? s.total_inactive_file ?? 0);
    cpu += stats.cpu_stats.cpu_usage.total_usage / 1e9;
  }
  return { memoryMiB: memory / 1024 / 1024, cpuSeconds: cpu };
}

/** Memory now, and CPU used over the next `seconds` (in cores). */
async function footprint(seconds = 5): Promise<string> {
  const before = await usage();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  const after = await usage();
  const cores = (after.cpuSeconds - before.cpuSeconds) / seconds;
  return `${after.memoryMiB.toFixed(0)} MiB, ${(cores * 100).toFixed(1)}% of a core`;
}

interface PodStatus {
  status: {
    conditions?: { type: string; status: string }[];
    containerStatuses?: { state?: { running?: { startedAt?: string } } }[];
  };
}

/**
 * Every node and pod Ready. With `since` (a wake from stop or checkpoint, whose API may still show the
 * status from before the sleep), only what the kubelets posted since then counts: a node's heartbeat,
 * a pod's containers started anew.
 */
async function allReady(since?: number): Promise<boolean> {
  const nodes = await kubeGet<{ items: KubeNode[] }>(direct, '/api/v1/nodes', 2000);
  const pods = await kubeGet<{ items: PodStatus[] }>(direct, '/api/v1/namespaces/default/pods', 2000);
  const fresh = (time: string | undefined) => since === undefined || Date.parse(time ?? '') > since;
  return (
    nodes.items.every(
      (n) =>
        isNodeReady(n) && fresh(n.status?.conditions?.find((c) => c.type === 'Ready')?.lastHeartbeatTime),
    ) &&
    pods.items.length > 0 &&
    pods.items.every(
      (p) =>
        p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') &&
        (p.status.containerStatuses ?? []).every((c) => fresh(c.state?.running?.startedAt)),
    )
  );
}

interface Wake {
  api: number;
  command: number;
  settled: number;
}

/** Wakes the cluster: when the API first answers, when the command returns, when all is Ready. */
async function wake(since?: number): Promise<Wake> {
  const started = performance.now();
  let api = 0;
  const watching = (async () => {
    while (!(await apiReady(direct))) await new Promise((resolve) => setTimeout(resolve, 20));
    api = performance.now() - started;
  })();
  const command = await vind(['wake', cluster]);
  await watching;
  for (;;) {
    if (await allReady(since).catch(() => false)) break;
    if (performance.now() - started > 120_000) throw new Error('the cluster did not settle in 120 s');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { api, command, settled: performance.now() - started };
}

async function objectCount(): Promise<number> {
  const list = await kubeGet<{ items: unknown[] }>(
    target,
    '/api/v1/namespaces/default/configmaps?labelSelector=bench=sleep',
  );
  return list.items.length;
}

function spread(values: number[]): string {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) =>
    formatDuration(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!);
  return `min ${at(0)}, median ${at(0.5)}, p90 ${at(0.9)}, max ${formatDuration(sorted.at(-1)!)}`;
}

async function setUp(): Promise<void> {
  await ensureTestImage();
  const scratch = await mkdtemp(join(tmpdir(), 'vind-bench-sleep-'));
  kubeconfig = join(scratch, 'kubeconfig');
  const created = await vind(['create', cluster, '--workers', '2']);
  console.log(`  cluster created in ${formatDuration(created)}`);
  target = targetFromKubeconfig(await readFile(kubeconfig, 'utf8'));
  const controlPlane = await docker().getContainer(`${cluster}-control-plane`).inspect();
  const address = Object.values(controlPlane.NetworkSettings.Networks)[0]?.IPAddress;
  direct = { ...target, server: `https://${address}:6443` };
  kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
  const counter = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'counter' },
    spec: {
      replicas: 2,
      selector: { matchLabels: { app: 'counter' } },
      template: {
        metadata: { labels: { app: 'counter' } },
        spec: {
          terminationGracePeriodSeconds: 1,
          containers: [
            {
              name: 'c',
              image: TEST_IMAGE,
              command: ['sh', '-c', 'i=0; while true; do i=$((i+1)); sleep 1; done'],
            },
          ],
        },
      },
    },
  };
  const maps = Array.from({ length: OBJECTS }, (_, i) => ({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: `kept-${i}`, labels: { bench: 'sleep' } },
    data: { i: String(i) },
  }));
  const applied = await kubectl(
    ['apply', '-f', '-'],
    JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [counter, ...maps] }),
  );
  if (applied.exitCode !== 0) throw new Error(applied.stderr);
  const rolled = await kubectl(['rollout', 'status', 'deployment/counter', '--timeout=180s']);
  if (rolled.exitCode !== 0) throw new Error(rolled.stderr);
}

async function figures(): Promise<void> {
  console.log(`  awake, idle: ${await footprint()}`);
  for (const mode of ['pause', 'stop', 'checkpoint'] as const) {
    for (let i = 0; i < runs; i++) {
      const sleptAt = Date.now();
      const slept = await vind(['sleep', cluster, '--mode', mode]);
      const asleep = await footprint();
      const woke = await wake(mode === 'pause' ? undefined : sleptAt);
      console.log(
        `  ${mode} run ${i + 1}: sleep ${formatDuration(slept)}; asleep ${asleep}; wake: API answering after ${formatDuration(woke.api)}, command ${formatDuration(woke.command)}, every node and pod Ready after ${formatDuration(woke.settled)}`,
      );
    }
  }
  for (const mode of ['pause', 'stop', 'checkpoint'] as const) {
    const sleptAt = Date.now();
    await vind(['sleep', cluster, '--mode', mode]);
    // Asleep a while, as a cluster a client comes back to.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const started = performance.now();
    const answered = await kubectl(['get', 'pods']);
    const answer = performance.now() - started;
    if (answered.exitCode !== 0) throw new Error(`kubectl get pods after ${mode}: ${answered.stderr.trim()}`);
    for (;;) {
      if (await allReady(mode === 'pause' ? undefined : sleptAt).catch(() => false)) break;
      if (performance.now() - started > 120_000) throw new Error('the cluster did not settle in 120 s');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    console.log(
      `  ${mode}, woken on demand: \`kubectl get pods\` answered after ${formatDuration(answer)}, every node and pod Ready after ${formatDuration(performance.now() - started)}`,
    );
  }
}

async function soakRuns(): Promise<void> {
  let failures = 0;
  const before = await objectCount();
  for (const [mode, count] of [
    ['pause', pauses],
    ['stop', stops],
  ] as const) {
    const api: number[] = [];
    const settled: number[] = [];
    for (let i = 0; i < count; i++) {
      try {
        const sleptAt = Date.now();
        await vind(['sleep', cluster, '--mode', mode]);
        const woke = await wake(mode === 'pause' ? undefined : sleptAt);
        api.push(woke.api);
        settled.push(woke.settled);
      } catch (error) {
        failures += 1;
        console.log(`  ${mode} cycle ${i + 1} failed: ${(error as Error).message}`);
        await vind(['wake', cluster]).catch(() => undefined);
      }
    }
    console.log(`  ${mode}: ${count} cycles; wake to the API answering ${spread(api)}`);
    console.log(`  ${mode}: wake to every node and pod Ready ${spread(settled)}`);
  }
  const after = await objectCount();
  console.log(`  failures: ${failures}; objects lost: ${before - after} of ${before}`);
}

async function main(): Promise<void> {
  console.log(
    soak
      ? `sleep soak: ${pauses} pause/wake and ${stops} stop/wake cycles, 1 control plane + 2 workers`
      : `sleep: 1 control plane + 2 workers, ${runs} runs per mode`,
  );
  const stop = () => void removeByLabel(cluster).finally(() => process.exit(130));
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    await setUp();
    if (soak) await soakRuns();
    else await figures();
  } finally {
    await runVind(['delete', cluster], { KUBECONFIG: kubeconfig });
    await removeByLabel(cluster);
    if (kubeconfig) await rm(join(kubeconfig, '..'), { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  console.error(`error: ${(error as Error).message}`);
  process.exit(1);
});
