// Remote nodes over WireGuard, measured on the remote-machine stand-in (scripts/remote-host.sh, behind
// NAT) with a cluster of 1 control plane + 2 local workers, made for the run and deleted at the end:
//
//   node dist/bench/remote-node.js [--runs 3] [--seconds 10]
//
//   a) join: from `vind join` to the node Ready, per run (the node is removed between runs);
//   b) pod to pod: iperf3 throughput and ping round trips from a pod on a local worker to a pod on
//      the other local worker, and to a pod on the remote node (through the hub and wireguard-go);
//      the ratio; the hub's CPU while the tunnel carries it.
//
// Figures only; nothing here asserts a time.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { formatDuration } from '../cli/progress.js';
import { hubName } from '../shared/remote-nodes.js';
import {
  copyImageToRemote,
  REMOTE_HOST,
  startRemoteHost,
  stopRemoteHost,
} from '../test/support/remote-host.js';
import {
  CLI,
  docker,
  ensureIperfImage,
  kubectlBinary,
  kubectlFor,
  NODE_IMAGE,
  removeByLabel,
  runVind,
} from '../test/support/workloads.js';

function option(name: string, fallback: number): number {
  const index = process.argv.indexOf(name);
  return index >= 0 ? Number(process.argv[index + 1]) : fallback;
}

const runs = option('--runs', 3);
const seconds = option('--seconds', 10);
const cluster = `bench-remote-${process.pid}`;
const remote = 'far';
let kubeconfig = '';
let kubectl: ReturnType<typeof kubectlFor>;

async function ok(args: string[], input?: string): Promise<string> {
  const result = await kubectl(args, input);
  if (result.exitCode !== 0) throw new Error(`kubectl ${args.join(' ')}: ${result.stderr.trim()}`);
  return result.stdout;
}

async function vind(args: string[], env: Record<string, string> = {}): Promise<string> {
  const result = await execa('node', [CLI, ...args], {
    env: { ...process.env, KUBECONFIG: kubeconfig, ...env },
    reject: false,
  });
  if (result.exitCode !== 0)
    throw new Error(`vind ${args.join(' ')}: ${result.stderr.trim().split('\n').at(-1)}`);
  return result.stdout;
}

const onRemote = { DOCKER_HOST: `unix://${REMOTE_HOST.socket}` };

async function nodeReady(name: string): Promise<boolean> {
  const result = await kubectl([
    'get',
    'node',
    name,
    '-o',
    'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
  ]);
  return result.exitCode === 0 && result.stdout === 'True';
}

async function joinOnce(): Promise<number> {
  const line = (
    await vind([
      'node',
      'add',
      remote,
      '--remote',
      '--cluster',
      cluster,
      '--endpoint',
      REMOTE_HOST.hostAddress,
    ])
  ).trim();
  const secret = line.split(' ')[2]!;
  const started = performance.now();
  await vind(['join', secret], onRemote);
  while (!(await nodeReady(remote))) {
    if (performance.now() - started > 180_000) throw new Error('the remote node was not Ready in 180 s');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return performance.now() - started;
}

function pod(name: string, node: string, image: string, command: string[]) {
  return JSON.stringify({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name },
    spec: {
      nodeName: node,
      terminationGracePeriodSeconds: 1,
      containers: [{ name: 'main', image, imagePullPolicy: 'IfNotPresent', command }],
    },
  });
}

/** Receiver bits per second of an iperf3 run from the client pod to `address`. */
async function iperf(address: string): Promise<number> {
  const text = await ok(['exec', 'client', '--', 'iperf3', '-c', address, '-t', String(seconds), '-J']);
  const report = JSON.parse(text) as { end: { sum_received: { bits_per_second: number } } };
  return report.end.sum_received.bits_per_second;
}

/** Average round trip of 20 pings from the client pod to `address`, in ms. */
async function latency(address: string): Promise<number> {
  const out = await ok(['exec', 'client', '--', 'ping', '-c', '20', '-i', '0.2', address]);
  const match = /= [\d.]+\/([\d.]+)\//.exec(out);
  if (!match) throw new Error(`no round-trip times in: ${out.trim().split('\n').at(-1)}`);
  return Number(match[1]);
}

/** The hub container's CPU (share of one core) over a stretch of time. */
async function hubCpu(during: Promise<unknown>): Promise<number> {
  const hub = docker().getContainer(hubName(cluster));
  const usage = async () =>
    ((await hub.stats({ stream: false })) as { cpu_stats: { cpu_usage: { total_usage: number } } }).cpu_stats
      .cpu_usage.total_usage;
  const started = performance.now();
  const before = await usage();
  await during;
  const after = await usage();
  return (after - before) / 1e6 / (performance.now() - started);
}

const mbit = (bps: number) => `${(bps / 1e6).toFixed(0)} Mbit/s`;

async function main(): Promise<void> {
  console.log(`remote node: 1 control plane + 2 local workers, a remote behind NAT, ${runs} joins`);
  const image = await ensureIperfImage();
  await startRemoteHost('nat');
  await copyImageToRemote(NODE_IMAGE);
  const scratch = await mkdtemp(join(tmpdir(), 'vind-bench-remote-'));
  kubeconfig = join(scratch, 'kubeconfig');
  kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
  try {
    await vind(['create', cluster, '--workers', '2']);
    const joins: number[] = [];
    for (let i = 0; i < runs; i++) {
      const took = await joinOnce();
      joins.push(took);
      console.log(`  a) join ${i + 1}: \`vind join\` to node Ready in ${formatDuration(took)}`);
      if (i < runs - 1) {
        await vind(['node', 'remove', remote, '--cluster', cluster]);
        await vind(['leave', remote], onRemote);
      }
    }
    const sorted = [...joins].sort((a, b) => a - b);
    console.log(`  a) join to Ready: median ${formatDuration(sorted[Math.floor(sorted.length / 2)]!)}`);

    const server = ['iperf3', '-s'];
    await ok(['apply', '-f', '-'], pod('client', `${cluster}-worker`, image, ['sleep', '100000']));
    await ok(['apply', '-f', '-'], pod('local', `${cluster}-worker2`, image, server));
    await ok(['apply', '-f', '-'], pod('remote', remote, image, server));
    await ok(['wait', '--for=condition=Ready', 'pod/client', 'pod/local', 'pod/remote', '--timeout=180s']);
    const ip = (name: string) => ok(['get', 'pod', name, '-o', 'jsonpath={.status.podIP}']);
    const localIp = await ip('local');
    const remoteIp = await ip('remote');
    const localBps = await iperf(localIp);
    let remoteBps = 0;
    const cpu = await hubCpu(iperf(remoteIp).then((bps) => (remoteBps = bps)));
    const localMs = await latency(localIp);
    const remoteMs = await latency(remoteIp);
    console.log(
      `  b) pod to pod, local worker to local worker: ${mbit(localBps)}, ping ${localMs.toFixed(2)} ms`,
    );
    console.log(
      `  b) pod to pod, local worker to remote node: ${mbit(remoteBps)}, ping ${remoteMs.toFixed(2)} ms`,
    );
    console.log(
      `  b) tunnel / local: ${(remoteBps / localBps).toFixed(3)}×; the hub's CPU meanwhile: ${(cpu * 100).toFixed(0)}% of a core`,
    );
  } finally {
    await execa('node', [CLI, 'leave'], { env: { ...process.env, ...onRemote }, reject: false });
    await runVind(['delete', cluster], { KUBECONFIG: kubeconfig });
    await removeByLabel(cluster);
    await stopRemoteHost().catch(() => undefined);
    await rm(scratch, { recursive: true, force: true });
  }
}

main().catch((error: unknown) => {
  console.error(`error: ${(error as Error).message}`);
  process.exit(1);
});
