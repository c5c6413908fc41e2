// time-to-k8s, modelled on minikube's benchmark: how long `vind create` takes, and the total until a
// freshly deployed pod gets an answer from cluster DNS for a Service; then CPU time and idle memory
// of every node container.
//
//   node dist/bench/time-to-k8s.js [--workers N] [--runs N] [--idle SECONDS] [--image REF]
//
// The node image must be built. The workload image (a static busybox built on the host) reaches
// the node through the image cache, as any host image does: its pull is part of the total.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { formatDuration } from '../cli/progress.js';
import {
  docker,
  ensureTestImage,
  kubectlBinary,
  LABEL_CLUSTER,
  TEST_IMAGE,
} from '../test/support/workloads.js';

const CLI = join(import.meta.dirname, '..', 'cli', 'main.js');

function option(name: string, fallback: number): number {
  const index = process.argv.indexOf(name);
  return index >= 0 ? Number(process.argv[index + 1]) : fallback;
}

const workers = option('--workers', 1);
const runs = option('--runs', 3);
const idleSeconds = option('--idle', 30);
const imageIndex = process.argv.indexOf('--image');
/** A node image other than the default, to compare two builds on one machine. */
const imageArgs = imageIndex >= 0 ? ['--image', process.argv[imageIndex + 1]!] : [];

interface Run {
  command: number;
  total: number;
  steps: string[];
}

async function vind(args: string[], env: Record<string, string> = {}) {
  const result = await execa('node', [CLI, ...args], { env, reject: false, stdin: 'ignore' });
  if (result.exitCode !== 0) throw new Error(`vind ${args.join(' ')} failed:\n${result.stderr}`);
  return result;
}

const dnsPod = (name: string) => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name },
  spec: {
    restartPolicy: 'Never',
    containers: [
      {
        name: 'dns',
        image: TEST_IMAGE,
        imagePullPolicy: 'IfNotPresent',
        command: ['sh', '-c', 'until nslookup kubernetes.default.svc.cluster.local; do sleep 0.1; done'],
      },
    ],
  },
});

async function oneRun(index: number, kubectl: string): Promise<Run> {
  const cluster = `bench-${process.pid}-${index}`;
  const scratch = await mkdtemp(join(tmpdir(), 'vind-bench-'));
  const kubeconfig = join(scratch, 'kubeconfig');
  try {
    const started = performance.now();
    const created = await vind(['create', cluster, '--workers', String(workers), ...imageArgs], {
      KUBECONFIG: kubeconfig,
    });
    const command = performance.now() - started;

    const deployStarted = performance.now();
    await execa(kubectl, ['--kubeconfig', kubeconfig, 'apply', '-f', '-'], {
      input: JSON.stringify(dnsPod('dns')),
    });
    await execa(kubectl, [
      '--kubeconfig',
      kubeconfig,
      'wait',
      '--for=jsonpath={.status.phase}=Succeeded',
      'pod/dns',
      '--timeout=120s',
    ]);
    const total = command + (performance.now() - deployStarted);
    const steps = created.stderr.split('\n').filter((l) => l.startsWith(' ✓'));
    if (index === runs - 1) await reportContainers(cluster);
    return { command, total, steps };
  } finally {
    await vind(['delete', cluster], { KUBECONFIG: kubeconfig }).catch(() => undefined);
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
  const kubectl = await kubectlBinary();
  process.stdout.write(
    `time-to-k8s: 1 control plane + ${workers} worker(s), ${runs} runs, node image present\n`,
  );
  const results: Run[] = [];
  for (let i = 0; i < runs; i++) {
    const run = await oneRun(i, kubectl);
    results.push(run);
    process.stdout.write(
      `  run ${i + 1}: command ${formatDuration(run.command)}, total ${formatDuration(run.total)}\n`,
    );
  }
  process.stdout.write(`  median command ${formatDuration(median(results.map((r) => r.command)))}\n`);
  process.stdout.write(
    `  median total until DNS answers ${formatDuration(median(results.map((r) => r.total)))}\n`,
  );
  process.stdout.write('  steps of the last create:\n');
  for (const step of results.at(-1)!.steps) process.stdout.write(`    ${step.trim()}\n`);
}

await main();
