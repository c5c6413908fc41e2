// The fault suite: what vind leaves behind and how it recovers when things go wrong on purpose. Not
// part of `npm test` (it takes minutes and restarts dockerd); it prints what it found.
//
//   node dist/bench/faults.js [--dockerd-pid PID] [--only kill,concurrent,dockerd,inputs,asleep]
//
// 1. kill:       `vind create` killed with SIGKILL at 10 points spread over its steps, then
//                `vind delete`: containers, networks and volumes left (target 0);
// 2. concurrent: 3 creates of different names at once, and 2 of the same name: outcomes;
// 3. dockerd:    dockerd restarted under a running cluster whose external PostgreSQL is stopped for
//                30 s at the same moment: Ready again with its objects, without user action (target
//                yes). Needs the PID of a dockerd this machine's user started (scripts/dockerd.sh),
//                or a systemd unit `docker`;
// 4. inputs:     30 bad inputs from the README's commands and config file: one line, non-zero exit,
//                nothing left;
// 5. asleep:     a paused and a stopped cluster across a dockerd restart: still asleep after it (the
//                restart policy did not wake them), and `vind wake` brings both back Ready.

import { chown, mkdtemp, readdir, rm, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { dockerRuntime } from '../cli/runtime/docker-runtime.js';
import { LABELS } from '../shared/contract.js';
import { sleep } from '../shared/poll.js';
import {
  CLI,
  docker,
  kubectlBinary,
  kubectlFor,
  PROJECT_ROOT,
  runVind,
  uniqueName,
  waitFor,
} from '../test/support/workloads.js';

function option(name: string): string | undefined {
  const index = process.argv.indexOf(name);
  return index >= 0 ? process.argv[index + 1] : undefined;
}

const only = new Set((option('--only') ?? 'kill,concurrent,dockerd,inputs,asleep').split(','));
const scratch = await mkdtemp(join(tmpdir(), 'vind-faults-'));
const kubeconfig = join(scratch, 'kubeconfig');
const env = { KUBECONFIG: kubeconfig };

/** Containers, volumes and networks that carry the cluster's label. */
async function leftovers(
  cluster: string,
): Promise<{ containers: number; volumes: number; networks: number }> {
  const runtime = dockerRuntime();
  const filter = [`${LABELS.cluster}=${cluster}`];
  return {
    containers: (await runtime.listContainers(filter)).length,
    volumes: (await runtime.listVolumes(filter)).length,
    networks: (await runtime.listNetworks(filter)).length,
  };
}

function total(left: { containers: number; volumes: number; networks: number }): number {
  return left.containers + left.volumes + left.networks;
}

// ---- 1. create killed with SIGKILL ----

const CREATE_STEPS = [
  'check host',
  'create network',
  'start 2 containers',
  'start control plane',
  'join 1 worker',
  'write kubeconfig',
  'wait for the API server',
  'wait for nodes Ready',
  'wait for CoreDNS',
];

/** Kill points: the start of each step, and two moments inside the longest one. */
const KILL_POINTS: { after: string; delayMs: number }[] = [
  ...CREATE_STEPS.map((step) => ({ after: step, delayMs: 0 })),
  { after: 'start control plane', delayMs: 2500 },
].slice(0, 10);

async function killedCreates(): Promise<void> {
  console.log('1. create killed with SIGKILL, then delete');
  let worst = 0;
  for (const point of KILL_POINTS) {
    const name = uniqueName('fault-kill');
    const child = execa('node', [CLI, 'create', name, '--workers', '1'], {
      env,
      reject: false,
      buffer: false,
    });
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    let reached = false;
    try {
      await waitFor(
        `"${point.after}"`,
        async () => (stderr.includes(` • ${point.after}`) ? true : undefined),
        120_000,
        20,
      );
      reached = true;
      await sleep(point.delayMs);
    } catch {
      // the step never showed (create already over): killed at the end
    }
    child.kill('SIGKILL');
    await child;
    const before = await leftovers(name);
    const again = await runVind(['create', name, '--workers', '1'], env);
    const refused =
      again.exitCode !== 0 ? (again.stderr.split('\n').find((l) => l.startsWith('error:')) ?? '') : 'created';
    const deleted = await runVind(['delete', name], env);
    const after = await leftovers(name);
    worst = Math.max(worst, total(after));
    console.log(
      `  killed at "${point.after}"${point.delayMs ? ` + ${point.delayMs}ms` : ''}${reached ? '' : ' (not reached)'}: ` +
        `left ${before.containers} containers, ${before.volumes} volumes, ${before.networks} networks; ` +
        `next create: ${refused.slice(0, 110)}; after delete (exit ${deleted.exitCode}): ${total(after)} left`,
    );
  }
  console.log(`  worst after delete: ${worst} objects left (target 0)`);
}

// ---- 2. concurrent creates ----

async function concurrentCreates(): Promise<void> {
  console.log('2. concurrent creates');
  const names = [uniqueName('fault-a'), uniqueName('fault-b'), uniqueName('fault-c')];
  const started = Date.now();
  const results = await Promise.all(names.map((name) => runVind(['create', name, '--workers', '1'], env)));
  names.forEach((name, i) =>
    console.log(
      `  ${name}: exit ${results[i]!.exitCode} ${results[i]!.exitCode === 0 ? '' : results[i]!.stderr.trim().split('\n').at(-1)}`,
    ),
  );
  console.log(
    `  3 different names: ${results.filter((r) => r.exitCode === 0).length} of 3 created in ${((Date.now() - started) / 1000).toFixed(1)}s`,
  );
  const cache = await docker().getContainer('vind-image-cache').inspect();
  const attached = names.filter((n) => cache.NetworkSettings.Networks[`vind-${n}`]);
  console.log(`  image cache attached to ${attached.length} of 3 networks`);
  for (const name of names) await runVind(['delete', name], env);

  const same = uniqueName('fault-same');
  const twins = await Promise.all([0, 1].map(() => runVind(['create', same, '--workers', '1'], env)));
  const made = twins.filter((r) => r.exitCode === 0).length;
  const refusal =
    twins
      .find((r) => r.exitCode !== 0)
      ?.stderr.trim()
      .split('\n')
      .at(-1) ?? '';
  console.log(`  2 creates of one name: ${made} created, ${2 - made} refused (${refusal.slice(0, 120)})`);
  const nodes = (
    await kubectlFor(
      await kubectlBinary(),
      kubeconfig,
    )(['--context', `vind-${same}`, 'get', 'nodes', '-o', 'name'])
  ).stdout.trim();
  console.log(`  the cluster that was made: ${nodes.replaceAll('\n', ', ') || 'none'}`);
  await runVind(['delete', same], env);
  console.log(`  left after delete: ${total(await leftovers(same))}`);
}

// ---- 3. dockerd restarted while the external datastore is down ----

async function restartDockerd(pid: string | undefined): Promise<string> {
  if (pid) {
    await execa('bash', [join(PROJECT_ROOT, 'scripts', 'dockerd.sh'), 'stop', pid]);
    const started = await execa('bash', [join(PROJECT_ROOT, 'scripts', 'dockerd.sh'), 'start']);
    return started.stdout.trim();
  }
  await execa('systemctl', ['restart', 'docker']);
  return '';
}

/** A running server, wrapped: a bare execa promise would be awaited away by an async return. */
interface Server {
  process: ResultPromise;
}

async function postgres(
  address: string,
  port: number,
): Promise<{ start: () => Promise<Server>; data: string }> {
  const versions = (await readdir('/usr/lib/postgresql')).sort((x, y) => Number(y) - Number(x));
  const bin = join('/usr/lib/postgresql', versions[0]!, 'bin');
  const uid = Number((await execa('id', ['-u', 'postgres'])).stdout);
  const gid = Number((await execa('id', ['-g', 'postgres'])).stdout);
  const dir = join(scratch, 'pg');
  await execa('mkdir', ['-p', dir]);
  await writeFile(join(scratch, 'pgpass'), 'faults');
  await chown(dir, uid, gid);
  await chown(join(scratch, 'pgpass'), uid, gid);
  await chown(scratch, uid, gid);
  const data = join(dir, 'data');
  await execa(
    join(bin, 'initdb'),
    ['-D', data, '-U', 'vind', `--pwfile=${join(scratch, 'pgpass')}`, '--auth=scram-sha-256'],
    { uid, gid },
  );
  await appendFile(join(data, 'pg_hba.conf'), 'host all all 0.0.0.0/0 scram-sha-256\n');
  const start = async (): Promise<Server> => {
    const server = execa(
      join(bin, 'postgres'),
      ['-D', data, '-p', String(port), '-k', dir, '-c', `listen_addresses=${address}`],
      {
        uid,
        gid,
        reject: false,
      },
    );
    await waitFor(
      'PostgreSQL',
      async () =>
        (await execa('pg_isready', ['-h', address, '-p', String(port)], { reject: false })).exitCode === 0
          ? true
          : undefined,
      30_000,
    );
    return { process: server };
  };
  return { start, data };
}

async function dockerdRestart(): Promise<void> {
  console.log('3. dockerd restarted while the external PostgreSQL is down for 30 s');
  const pid = option('--dockerd-pid');
  if (
    !pid &&
    (await execa('systemctl', ['is-active', 'docker'], { reject: false })).stdout.trim() !== 'active'
  ) {
    console.log('  skipped: give --dockerd-pid PID of a dockerd you started, or run dockerd under systemd');
    return;
  }
  const address = await dockerRuntime().hostAddressOn('bridge');
  const port = 20000 + Math.floor(Math.random() * 20000);
  const pg = await postgres(address, port);
  let server = await pg.start();
  const name = uniqueName('fault-dockerd');
  const url = `postgres://vind:faults@${address}:${port}/kine?sslmode=disable`;
  try {
    const created = await runVind(['create', name, '--workers', '1', '--datastore', url], env);
    if (created.exitCode !== 0) throw new Error(created.stderr);
    const kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
    await kubectl(['--context', `vind-${name}`, 'create', 'configmap', 'kept', '--from-literal=k=v']);
    await kubectl([
      '--context',
      `vind-${name}`,
      'create',
      'service',
      'loadbalancer',
      'kept',
      '--tcp=80:8080',
    ]);
    const addressOf = async () =>
      (
        await kubectl([
          '--context',
          `vind-${name}`,
          'get',
          'service',
          'kept',
          '-o',
          'jsonpath={.status.loadBalancer.ingress[0].ip}',
        ])
      ).stdout.trim() || undefined;
    const address = await waitFor('a LoadBalancer address', addressOf, 30_000, 100);
    server.process.kill('SIGINT');
    await server.process;
    const started = Date.now();
    const newPid = await restartDockerd(pid);
    if (newPid) console.log(`  dockerd restarted (now pid ${newPid}: pass it as --dockerd-pid next time)`);
    await sleep(Math.max(0, 30_000 - (Date.now() - started)));
    server = await pg.start();
    const back = await waitFor(
      'the cluster to be Ready with its objects',
      async () => {
        const nodes = await kubectl([
          '--context',
          `vind-${name}`,
          'get',
          'nodes',
          '-o',
          'jsonpath={.items[*].status.conditions[?(@.type=="Ready")].status}',
        ]);
        const kept = await kubectl([
          '--context',
          `vind-${name}`,
          'get',
          'configmap',
          'kept',
          '-o',
          'jsonpath={.data.k}',
        ]);
        return nodes.stdout.trim() === 'True' && kept.stdout === 'v' ? true : undefined;
      },
      300_000,
      2000,
    ).then(
      () => true,
      () => false,
    );
    console.log(
      `  Ready again with its objects, without user action: ${back ? 'yes' : 'NO'} after ${((Date.now() - started) / 1000).toFixed(1)}s (datastore down 30 s of it)`,
    );
    const kept = await addressOf().catch(() => undefined);
    console.log(
      `  LoadBalancer address kept: ${kept === address ? 'yes' : 'NO'} (${address} before, ${kept ?? 'none'} after)`,
    );
  } finally {
    await runVind(['delete', name], env);
    server.process.kill('SIGINT');
    await server.process;
  }
}

// ---- 5. sleeping clusters across a dockerd restart ----

async function asleepAcrossRestart(): Promise<void> {
  console.log('5. a paused and a stopped cluster across a dockerd restart');
  let pid = option('--dockerd-pid');
  if (
    !pid &&
    (await execa('systemctl', ['is-active', 'docker'], { reject: false })).stdout.trim() !== 'active'
  ) {
    console.log('  skipped: give --dockerd-pid PID of a dockerd you started, or run dockerd under systemd');
    return;
  }
  const names = { pause: uniqueName('fault-paused'), stop: uniqueName('fault-stopped') };
  try {
    for (const [mode, name] of Object.entries(names)) {
      const created = await runVind(['create', name, '--workers', '1'], env);
      if (created.exitCode !== 0) throw new Error(created.stderr);
      const slept = await runVind(['sleep', name, '--mode', mode], env);
      if (slept.exitCode !== 0) throw new Error(slept.stderr);
    }
    const newPid = await restartDockerd(pid);
    if (newPid) {
      pid = newPid;
      console.log(`  dockerd restarted (now pid ${newPid}: pass it as --dockerd-pid next time)`);
    }
    // Give the restart policies the time they would take to start anything.
    await sleep(10_000);
    for (const [mode, name] of Object.entries(names)) {
      const containers = await docker().listContainers({
        all: true,
        filters: { label: [`${LABELS.cluster}=${name}`] },
      });
      const running = containers.filter((c) => c.State === 'running').length;
      const started = performance.now();
      const woke = await runVind(['wake', name], env);
      console.log(
        `  ${mode}: ${running === 0 ? 'still asleep' : `WOKEN by the restart (${running} running)`}; wake ${woke.exitCode === 0 ? `Ready in ${((performance.now() - started) / 1000).toFixed(1)}s` : `FAILED: ${woke.stderr.trim()}`}`,
      );
    }
  } finally {
    for (const name of Object.values(names)) await runVind(['delete', name], env);
  }
}

// ---- 4. bad inputs ----

const HEADER = 'apiVersion: vind.dev/v1alpha1\nkind: Cluster\n';

const BAD_CONFIGS: [string, string][] = [
  ['not YAML', 'a: [1, 2\n'],
  ['another apiVersion', 'apiVersion: vind.dev/v2\nkind: Cluster\n'],
  ['another kind', 'apiVersion: vind.dev/v1alpha1\nkind: Pod\n'],
  ['an unknown field', `${HEADER}networking:\n  podSubnetz: 10.1.0.0/16\n`],
  ['a CIDR with host bits', `${HEADER}networking:\n  podSubnet: 10.244.1.0/16\n`],
  ['overlapping subnets', `${HEADER}networking:\n  podSubnet: 10.96.0.0/16\n  serviceSubnet: 10.96.0.0/16\n`],
  ['a negative worker count', `${HEADER}workers: -1\n`],
  ['a kubelet-refused label', `${HEADER}workers:\n  - labels: { kubernetes.io/role: db }\n`],
  ['a number as label value', `${HEADER}workers:\n  - labels: { tier: 3 }\n`],
  ['a node-restriction label', `${HEADER}workers:\n  - labels: { node-restriction.kubernetes.io/x: y }\n`],
  [
    'a host port out of range',
    `${HEADER}workers:\n  - extraPortMappings:\n      - { containerPort: 80, hostPort: 70000 }\n`,
  ],
  [
    'one host port twice',
    `${HEADER}workers:\n  - extraPortMappings:\n      - { containerPort: 80, hostPort: 18080 }\n  - extraPortMappings:\n      - { containerPort: 81, hostPort: 18080 }\n`,
  ],
  ['a text API server port', `${HEADER}networking:\n  apiServerPort: high\n`],
  ['a tiny cache limit', `${HEADER}imageCache:\n  limit: 1K\n`],
  ['an unknown Pod Security level', `${HEADER}podSecurity: open\n`],
  ['a bad datastore URL', `${HEADER}datastore:\n  url: redis://cache:6379\n`],
  ['a LoadBalancer range outside 128-254', `${HEADER}loadBalancer:\n  range: 100-140\n`],
  ['an unknown host-ports mode', `${HEADER}loadBalancer:\n  hostPorts: sometimes\n`],
];

async function badInputs(): Promise<void> {
  console.log('4. bad inputs');
  const before = (await docker().listContainers({ all: true })).length;
  const cases: [string, string[]][] = [
    ['an invalid cluster name', ['create', 'My_Cluster']],
    ['a negative --workers', ['create', 'bad', '--workers=-1']],
    ['too many --workers', ['create', 'bad', '--workers', '21']],
    ['a word as --workers', ['create', 'bad', '--workers', 'two']],
    ['a --kubernetes-version that is no version', ['create', 'bad', '--kubernetes-version', 'latest']],
    ['a --kubernetes-version too old', ['create', 'bad', '--kubernetes-version', 'v1.29.4']],
    ['an empty --image', ['create', 'bad', '--image', '']],
    ['a --datastore of an unknown kind', ['create', 'bad', '--datastore', 'mongodb://h']],
    ['a --datastore with port 0', ['create', 'bad', '--datastore', 'postgres://u:p@db:0/x']],
    ['a --wait that is no duration', ['create', 'bad', '--wait', 'soon']],
    ['an unknown --pod-security', ['create', 'bad', '--pod-security', 'strict']],
    ['a --config that does not exist', ['create', 'bad', '--config', join(scratch, 'missing.yaml')]],
    ['a node image that is not built', ['create', 'bad', '--image', 'vind/node:v1.31.99']],
    ['kubeconfig of a cluster that does not exist', ['kubeconfig', 'nowhere']],
    ['image load into a cluster that does not exist', ['image', 'load', 'busybox', '--cluster', 'nowhere']],
    ['sleep of a cluster that does not exist', ['sleep', 'nowhere']],
    ['wake of a cluster that does not exist', ['wake', 'nowhere']],
    ['an unknown sleep --mode', ['sleep', 'nowhere', '--mode', 'nap']],
  ];
  for (const [what, body] of BAD_CONFIGS) {
    const file = join(scratch, `${what.replaceAll(' ', '-')}.yaml`);
    await writeFile(file, body);
    cases.push([`config file: ${what}`, ['create', 'bad', '--config', file]]);
  }
  let good = 0;
  for (const [index, [what, args]] of cases.entries()) {
    const result = await runVind(args, env);
    // Progress lines may come first; the failure itself must be one line.
    const errors = result.stderr.split('\n').filter((l) => l.startsWith('error'));
    const oneLine = errors.length === 1 && errors[0]!.startsWith('error: ');
    const nothingLeft = total(await leftovers('bad')) === 0;
    const ok = result.exitCode !== 0 && oneLine && nothingLeft;
    if (ok) good++;
    console.log(
      `  ${String(index + 1).padStart(2)}. ${ok ? 'ok ' : 'BAD'} ${what}: exit ${result.exitCode}: ${errors.join(' | ').slice(0, 150)}`,
    );
  }
  const after = (await docker().listContainers({ all: true })).length;
  console.log(
    `  ${good} of ${cases.length} refused in one line with a non-zero exit and nothing left; containers before ${before}, after ${after}`,
  );
}

try {
  if (only.has('kill')) await killedCreates();
  if (only.has('concurrent')) await concurrentCreates();
  if (only.has('dockerd')) await dockerdRestart();
  if (only.has('inputs')) await badInputs();
  if (only.has('asleep')) await asleepAcrossRestart();
} finally {
  await rm(scratch, { recursive: true, force: true });
}
