// time-to-k8s, after minikube's benchmark: how long `vind create` takes, then how long until the API
// answers, the kubernetes and kube-dns Services exist, a freshly deployed app answers its readiness
// probe and a DNS lookup from it is answered. Each phase is the median over the runs, counted from
// the start of the command. Then CPU time and idle memory of every container of the last cluster.
//
//   node dist/bench/time-to-k8s.js [--workers N] [--runs N] [--idle SECONDS] [--image REF]
//
// The node image must be built. The app's image (a static busybox built on the host) reaches the
// node through the image cache, as any host image does: its pull is part of the total. The waits
// after the command ask the API directly (no kubectl process competing for the same two cores).

import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { formatDuration } from '../cli/progress.js';
import { kubeRequest, type KubeTarget, targetFromKubeconfig } from '../shared/kubernetes.js';
import { docker, ensureTestImage, LABEL_CLUSTER, TEST_IMAGE } from '../test/support/workloads.js';

const CLI = join(import.meta.dirname, '..', 'cli', 'main.js');

function option(name: string, fallback: number): number {
  const index = process.argv.indexOf(name);
  return index >= 0 ? Number(process.argv[index + 1]) : fallback;
}

const workers = option('--workers', 1);
const runs = option('--runs', 5);
const idleSeconds = option('--idle', 30);
const imageIndex = process.argv.indexOf('--image');
/** A node image other than the default, to compare two builds on one machine. */
const imageArgs = imageIndex >= 0 ? ['--image', process.argv[imageIndex + 1]!] : [];

const PHASES = [
  'command',
  'API answers',
  'kubernetes and kube-dns Services',
  'app answers',
  'DNS lookup from the app',
] as const;
type Phase = (typeof PHASES)[number];

interface Run {
  /** Milliseconds from the start of the command. */
  at: Record<Phase, number>;
  /** create's own steps and their durations. */
  steps: Map<string, number>;
}

/** An app that serves HTTP (its readiness probe) and then resolves a Service name. */
const appPod = {
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name: 'app' },
  spec: {
    containers: [
      {
        name: 'app',
        image: TEST_IMAGE,
        imagePullPolicy: 'IfNotPresent',
        command: [
          'sh',
          '-c',
          'mkdir -p /tmp/www && httpd -p 8080 -h /tmp/www && ' +
            'until nslookup kubernetes.default.svc.cluster.local >/dev/null 2>&1; do sleep 0.1; done; ' +
            'echo dns-answered; exec sleep 3600',
        ],
        readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 },
      },
    ],
  },
};

async function waitUntil(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 180_000;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const ok = async (target: KubeTarget, path: string) =>
  (await kubeRequest(target, 'GET', path)).status === 200;

/** Step lines of create's output (` ✓ name (1.2s, detail)`) as name → milliseconds. */
function stepDurations(stderr: string): Map<string, number> {
  const steps = new Map<string, number>();
  for (const line of stderr.split('\n')) {
    const match = / ✓ (.+?) \((\d+(?:\.\d+)?)(ms|s)\b/.exec(line);
    if (match)
      steps.set(
        match[1]!.replace(/\d+ (containers|workers?)/, 'N $1'),
        Number(match[2]) * (match[3] === 's' ? 1000 : 1),
      );
  }
  return steps;
}

async function oneRun(index: number): Promise<Run> {
  const cluster = `bench-${process.pid}-${index}`;
  const scratch = await mkdtemp(join(tmpdir(), 'vind-bench-'));
  const kubeconfig = join(scratch, 'kubeconfig');
  try {
    const started = performance.now();
    const since = () => performance.now() - started;
    const created = await execa(
      'node',
      [CLI, 'create', cluster, '--workers', String(workers), ...imageArgs],
      {
        env: { KUBECONFIG: kubeconfig },
        reject: false,
        stdin: 'ignore',
      },
    );
    const command = since();
    if (created.exitCode !== 0) throw new Error(`vind create failed:\n${created.stderr}`);
    const target = targetFromKubeconfig(await readFile(kubeconfig, 'utf8'));
    const at = { command } as Record<Phase, number>;
    await waitUntil('the API', () => ok(target, '/readyz'));
    at['API answers'] = since();
    await waitUntil(
      'the Services',
      async () =>
        (await ok(target, '/api/v1/namespaces/default/services/kubernetes')) &&
        (await ok(target, '/api/v1/namespaces/kube-system/services/kube-dns')),
    );
    at['kubernetes and kube-dns Services'] = since();
    const posted = await kubeRequest(target, 'POST', '/api/v1/namespaces/default/pods', appPod);
    if (posted.status !== 201) throw new Error(`creating the app: ${posted.status}`);
    await waitUntil('the app to answer', async () => {
      const pod = await kubeRequest<{ status?: { conditions?: { type: string; status: string }[] } }>(
        target,
        'GET',
        '/api/v1/namespaces/default/pods/app',
      );
      return pod.body.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
    });
    at['app answers'] = since();
    await waitUntil('the DNS answer', async () => {
      const log = await kubeRequest<string>(target, 'GET', '/api/v1/namespaces/default/pods/app/log');
      return typeof log.body === 'string' && log.body.includes('dns-answered');
    });
    at['DNS lookup from the app'] = since();
    if (index === runs - 1) await reportContainers(cluster);
    return { at, steps: stepDurations(created.stderr) };
  } finally {
    await execa('node', [CLI, 'delete', cluster], { env: { KUBECONFIG: kubeconfig }, reject: false });
    await rm(scratch, { recursive: true, force: true });
  }
}

/** Memory in use without the page cache, as `docker stats` counts it. */
function workingSet(stats: { memory_stats: { usage?: number; stats?: Record<string, number> } }): number {
  const usage = stats.memory_stats.usage ?? 0;
  const s = stats.memory_stats.stats ?? {};
  return usage - (s.total_inactive_file ?? s.inactive_file ?? s.cache ?? 0);
}

async function reportContainers(cluster: string): Promise<void> {
  process.stdout.write(`  idle for ${idleSeconds}s …\n`);
  await new Promise((resolve) => setTimeout(resolve, idleSeconds * 1000));
  const containers = await docker().listContainers({ filters: { label: [`${LABEL_CLUSTER}=${cluster}`] } });
  for (const c of containers.sort((x, y) => x.Names[0]!.localeCompare(y.Names[0]!))) {
    const stats = (await docker().getContainer(c.Id).stats({ stream: false })) as unknown as {
      memory_stats: { usage?: number; stats?: Record<string, number> };
      cpu_stats: { cpu_usage: { total_usage: number } };
    };
    const name = c.Names[0]!.replace(/^\//, '').replace(`${cluster}-`, '');
    const memory = (workingSet(stats) / 1024 / 1024).toFixed(0);
    const cpu = (stats.cpu_stats.cpu_usage.total_usage / 1e9).toFixed(1);
    process.stdout.write(
      `  ${name.padEnd(16)} idle memory ${memory.padStart(4)} MiB   CPU time since start ${cpu}s\n`,
    );
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function main(): Promise<void> {
  await ensureTestImage();
  process.stdout.write(
    `time-to-k8s: 1 control plane + ${workers} worker(s), ${runs} runs, node image present\n`,
  );
  const results: Run[] = [];
  for (let i = 0; i < runs; i++) {
    const run = await oneRun(i);
    results.push(run);
    const phases = PHASES.map((p) => `${p} ${formatDuration(run.at[p])}`).join(', ');
    process.stdout.write(`  run ${i + 1}: ${phases}\n`);
  }
  process.stdout.write(`  median of ${runs}, from the start of the command:\n`);
  for (const phase of PHASES) {
    const values = results.map((r) => r.at[phase]);
    const range = `${formatDuration(Math.min(...values))}-${formatDuration(Math.max(...values))}`;
    process.stdout.write(
      `    ${phase.padEnd(34)} ${formatDuration(median(values)).padStart(6)}   (${range})\n`,
    );
  }
  process.stdout.write(`  create's steps, median of ${runs}:\n`);
  for (const step of results[0]!.steps.keys()) {
    const values = results.map((r) => r.steps.get(step) ?? 0);
    process.stdout.write(`    ${step.padEnd(34)} ${formatDuration(median(values)).padStart(6)}\n`);
  }
}

await main();
