// `vind export logs`: everything needed to see why a cluster failed, in one folder, for a person or
// a CI artifact. It must work on the clusters that need it most: one whose create failed and was kept
// (`--retain`: containers up, the API server maybe not), and one that sleeps (paused or stopped
// containers). So every part is independent: what cannot be read is named in notes.txt and the rest
// is still written. The engine's own view (inspect, `docker logs`) works for any container; files
// inside a node are read only from running ones (exec), and the API server is asked only when the
// control plane runs and is awake (asking a sleeping cluster through its front door would wake it).
//
// Layout:
//   versions.txt, containers.txt, notes.txt
//   containers/<container>/inspect.json, docker.log
//   containers/<container>/var/log/...          (node containers: the daemons' logs, pod logs)
//   containers/<container>/run/vind/status      (the agent's status)
//   kubernetes/version.json, nodes.yaml, events.yaml, events.txt
//   kubernetes/pods/<namespace>/<pod>.yaml, kubernetes/pods/<namespace>/<pod>/<container>.log

import { createGunzip } from 'node:zlib';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { dirname, join, normalize, resolve, sep } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { stringify } from 'yaml';
import { clusterKubeconfig, sleepRecord } from './clusters.js';
import { DEFAULT_KUBERNETES_VERSION } from '../images/recipe.js';
import { LABELS, STATUS_FILE, VIND_VERSION } from '../shared/contract.js';
import { describeError, VindError } from '../shared/errors.js';
import { kubeGet, type KubeTarget, targetFromKubeconfig } from '../shared/kubernetes.js';
import type { ContainerInfo, ContainerRuntime } from './runtime/runtime.js';

/** The folders copied out of every running node container. */
export const NODE_LOG_PATHS = ['/var/log', '/run/vind'] as const;
/** Roles whose containers run the node agent, and so have its log files and status. */
const AGENT_ROLES = new Set(['control-plane', 'worker', 'hub']);
/** Pod logs are fetched this many at a time. */
const PARALLEL_LOGS = 8;

export interface ExportLogsOptions {
  runtime: ContainerRuntime;
  cluster: string;
  /** The folder to write; default `./vind-logs-<cluster>-<timestamp>`. */
  output?: string;
  now?: Date;
  /** The API server of the cluster, when the caller knows it better than the admin kubeconfig. */
  kubeTarget?: (cluster: string) => Promise<KubeTarget>;
  /** One line per part as it is written (stderr in the CLI). */
  progress?: (line: string) => void;
}

export interface ExportLogsResult {
  dir: string;
  /** What could not be read, and why; also in notes.txt. */
  notes: string[];
}

/** `20261122T201500Z`: sorts, and is a valid file name everywhere. */
export function exportTimestamp(now: Date): string {
  return now
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
}

export function defaultExportDir(cluster: string, now: Date): string {
  return `vind-logs-${cluster}-${exportTimestamp(now)}`;
}

/** A name from a container or the API, made safe as one path segment. */
function segment(name: string): string {
  const safe = name.replace(/[^A-Za-z0-9._-]/g, '_');
  return safe === '.' || safe === '..' || safe === '' ? '_' : safe;
}

class Writer {
  constructor(readonly root: string) {}

  async write(path: string, content: string | Buffer): Promise<void> {
    const file = join(this.root, path);
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, content);
  }
}

export async function exportLogs(options: ExportLogsOptions): Promise<ExportLogsResult> {
  const { runtime, cluster } = options;
  const progress = options.progress ?? (() => undefined);
  const containers = (await runtime.listContainers([`${LABELS.cluster}=${cluster}`])).sort((a, b) =>
    a.name.localeCompare(b.name),
  );
  if (containers.length === 0) {
    throw new VindError(`cluster "${cluster}" does not exist: see \`vind list\``);
  }
  const dir = resolve(options.output ?? defaultExportDir(cluster, options.now ?? new Date()));
  const existing = await readdir(dir).catch(() => [] as string[]);
  if (existing.length > 0) throw new VindError(`${dir} is not empty: choose another --output folder`);
  await mkdir(dir, { recursive: true });
  const out = new Writer(dir);
  const notes: string[] = [];

  const asleep = await sleepRecord(runtime, cluster);
  await out.write(
    'containers.txt',
    table([
      ['NAME', 'ROLE', 'STATE', 'IMAGE'],
      ...containers.map((c) => [c.name, c.labels[LABELS.role] ?? '-', c.state, c.image ?? '-']),
    ]),
  );
  if (asleep) notes.push(`the cluster sleeps (${asleep.mode}) since ${asleep.since}`);

  for (const container of containers) {
    progress(`${container.name} (${container.state})`);
    await exportContainer(runtime, container, out, notes);
  }

  const controlPlane = containers.find((c) => c.labels[LABELS.role] === 'control-plane');
  let apiVersion: string | undefined;
  if (!controlPlane) {
    notes.push('kubernetes: the cluster has no control plane container: the API server was not asked');
  } else if (controlPlane.state !== 'running' || asleep) {
    notes.push(
      `kubernetes: the control plane is ${asleep ? `asleep (${asleep.mode})` : controlPlane.state}: ` +
        'the API server was not asked (that would wake the cluster)',
    );
  } else {
    progress('kubernetes');
    apiVersion = await exportKubernetes(options, out, notes);
  }

  const image = controlPlane?.image ?? containers.find((c) => c.image)?.image;
  await out.write(
    'versions.txt',
    [
      `vind: ${VIND_VERSION}`,
      `engine: ${runtime.endpoint}`,
      `node image: ${image ?? 'unknown'}`,
      `kubernetes (control plane label): ${controlPlane?.labels[LABELS.kubernetesVersion] ?? 'unknown'}`,
      `kubernetes (API server): ${apiVersion ?? 'not asked or no answer (see notes.txt)'}`,
      `kubernetes (vind default): ${DEFAULT_KUBERNETES_VERSION}`,
      '',
    ].join('\n'),
  );
  await out.write(
    'notes.txt',
    notes.length > 0 ? `${notes.join('\n')}\n` : 'everything was read: nothing to note\n',
  );
  return { dir, notes };
}

async function exportContainer(
  runtime: ContainerRuntime,
  container: ContainerInfo,
  out: Writer,
  notes: string[],
): Promise<void> {
  const base = join('containers', segment(container.name));
  try {
    await out.write(
      join(base, 'inspect.json'),
      `${JSON.stringify(await runtime.inspectContainerJson(container.name), null, 2)}\n`,
    );
  } catch (error) {
    notes.push(`${container.name}: inspect failed: ${describeError(error)}`);
  }
  try {
    await out.write(join(base, 'docker.log'), await runtime.logs(container.name));
  } catch (error) {
    notes.push(`${container.name}: docker logs failed: ${describeError(error)}`);
  }
  if (!AGENT_ROLES.has(container.labels[LABELS.role] ?? '')) return;
  if (container.state !== 'running') {
    notes.push(
      `${container.name}: ${container.state}, not running: its files (${NODE_LOG_PATHS.join(', ')}) were not read`,
    );
    return;
  }
  const copied = await copyFolders(runtime, container.name, out, base).catch((error: unknown) => {
    notes.push(
      `${container.name}: copying ${NODE_LOG_PATHS.join(', ')} failed (${describeError(error)}): reading the files one by one`,
    );
    return [] as string[];
  });
  if (copied.length === 0) {
    await readOneByOne(runtime, container.name, out, base, notes);
  } else if (!copied.includes(STATUS_FILE.slice(1))) {
    notes.push(`${container.name}: no ${STATUS_FILE}: its agent has not written one yet`);
  }
}

/**
 * Copies the node's log folders in one exec: a gzipped tar through base64, since exec output is
 * text. Only regular files are written, and only inside the container's own folder; returns their
 * paths (relative to /).
 */
async function copyFolders(
  runtime: ContainerRuntime,
  container: string,
  out: Writer,
  base: string,
): Promise<string[]> {
  const folders = NODE_LOG_PATHS.map((p) => p.replace(/^\//, ''));
  // tar says "file changed as we read it" of a growing log and exits 1: what it wrote is still good.
  const result = await runtime.exec(container, [
    'sh',
    '-c',
    `tar -C / --ignore-failed-read -czf - ${folders.join(' ')} 2>/dev/null | base64 -w0`,
  ]);
  const archive = Buffer.from(result.stdout.trim(), 'base64');
  if (archive.length === 0) throw new Error(`tar gave nothing (exit ${result.exitCode})`);
  const root = resolve(out.root, base);
  const files: string[] = [];
  const extract = tar.extract();
  extract.on('entry', (header, stream, next) => {
    const target = resolve(root, normalize(header.name));
    const inside = target.startsWith(`${root}${sep}`);
    if (header.type !== 'file' || !inside) {
      stream.resume();
      stream.on('end', next);
      return;
    }
    const chunks: Buffer[] = [];
    stream.on('data', (c: unknown) => chunks.push(c as Buffer));
    stream.on('end', () => {
      files.push(normalize(header.name));
      out.write(target.slice(out.root.length + 1), Buffer.concat(chunks)).then(() => next(), next);
    });
  });
  await pipeline(Readable.from([archive]), createGunzip(), extract);
  return files;
}

/** The fallback without tar: the agent's folder listed with `ls`, each file read, and the status. */
async function readOneByOne(
  runtime: ContainerRuntime,
  container: string,
  out: Writer,
  base: string,
  notes: string[],
): Promise<void> {
  const listing = await runtime.exec(container, ['ls', '-1', '/var/log/vind']);
  const names = listing.exitCode === 0 ? listing.stdout.split('\n').filter(Boolean) : [];
  for (const path of [...names.map((n) => `/var/log/vind/${n}`), STATUS_FILE]) {
    const text = await runtime.readFile(container, path);
    if (text === undefined) notes.push(`${container}: ${path} could not be read`);
    else await out.write(join(base, ...path.split('/').filter(Boolean).map(segment)), text);
  }
}

interface Meta {
  name: string;
  namespace?: string;
}

interface KubeEvent {
  metadata: Meta;
  involvedObject?: { kind?: string; name?: string; namespace?: string };
  type?: string;
  reason?: string;
  message?: string;
  count?: number;
  lastTimestamp?: string | null;
  eventTime?: string | null;
  firstTimestamp?: string | null;
}

interface KubePod {
  metadata: Meta;
  spec?: {
    containers?: { name: string }[];
    initContainers?: { name: string }[];
    ephemeralContainers?: { name: string }[];
  };
  status?: {
    containerStatuses?: { name: string; restartCount?: number }[];
    initContainerStatuses?: { name: string; restartCount?: number }[];
  };
}

/** Writes what the API server knows; returns its version, or undefined when it did not answer. */
async function exportKubernetes(
  options: ExportLogsOptions,
  out: Writer,
  notes: string[],
): Promise<string | undefined> {
  let target: KubeTarget;
  try {
    target = options.kubeTarget
      ? await options.kubeTarget(options.cluster)
      : targetFromKubeconfig(await clusterKubeconfig(options.runtime, options.cluster, false));
  } catch (error) {
    notes.push(`kubernetes: no credentials for the API server: ${describeError(error)}`);
    return undefined;
  }
  let version: { gitVersion?: string };
  try {
    version = await kubeGet<{ gitVersion?: string }>(target, '/version', 5000);
  } catch (error) {
    notes.push(`kubernetes: the API server did not answer: ${describeError(error)}`);
    return undefined;
  }
  await out.write('kubernetes/version.json', `${JSON.stringify(version, null, 2)}\n`);

  const part = async (what: string, work: () => Promise<void>) => {
    try {
      await work();
    } catch (error) {
      notes.push(`kubernetes: ${what} failed: ${describeError(error)}`);
    }
  };
  await part('nodes', async () => {
    const nodes = await kubeGet<{ items: unknown[] }>(target, '/api/v1/nodes');
    await out.write('kubernetes/nodes.yaml', stringify(nodes.items));
  });
  await part('events', async () => {
    const events = (await kubeGet<{ items: KubeEvent[] }>(target, '/api/v1/events')).items;
    await out.write('kubernetes/events.yaml', stringify(events));
    await out.write('kubernetes/events.txt', formatEvents(events));
  });
  await part('pods', async () => {
    const pods = (await kubeGet<{ items: KubePod[] }>(target, '/api/v1/pods')).items;
    const fetches: (() => Promise<void>)[] = [];
    for (const pod of pods) {
      const namespace = pod.metadata.namespace ?? 'default';
      const folder = join('kubernetes', 'pods', segment(namespace));
      await out.write(join(folder, `${segment(pod.metadata.name)}.yaml`), stringify(pod));
      for (const { name, previous } of podContainers(pod)) {
        fetches.push(async () => {
          const path =
            `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods/` +
            `${encodeURIComponent(pod.metadata.name)}/log?container=${encodeURIComponent(name)}` +
            (previous ? '&previous=true' : '');
          const file = join(
            folder,
            segment(pod.metadata.name),
            `${segment(name)}${previous ? '.previous' : ''}.log`,
          );
          try {
            await out.write(file, logText(await kubeGet<unknown>(target, path, 30_000)));
          } catch (error) {
            const which = `${namespace}/${pod.metadata.name} ${name}${previous ? ' (previous)' : ''}`;
            notes.push(`kubernetes: logs of ${which}: ${describeError(error)}`);
          }
        });
      }
    }
    await inParallel(fetches, PARALLEL_LOGS);
  });
  return version.gitVersion ?? 'unknown';
}

/** Every container of a pod, and those that restarted once more for the log of their last run. */
export function podContainers(pod: KubePod): { name: string; previous: boolean }[] {
  const statuses = [...(pod.status?.containerStatuses ?? []), ...(pod.status?.initContainerStatuses ?? [])];
  const names = [
    ...(pod.spec?.initContainers ?? []),
    ...(pod.spec?.containers ?? []),
    ...(pod.spec?.ephemeralContainers ?? []),
  ].map((c) => c.name);
  return names.flatMap((name) => {
    const restarted = (statuses.find((s) => s.name === name)?.restartCount ?? 0) > 0;
    return restarted
      ? [
          { name, previous: false },
          { name, previous: true },
        ]
      : [{ name, previous: false }];
  });
}

/** A log is text; the client parses an answer that happens to be JSON, so it is turned back. */
function logText(body: unknown): string {
  if (body === undefined || body === null) return '';
  return typeof body === 'string' ? body : JSON.stringify(body);
}

/** One event per line, oldest first, as `kubectl get events` shows them. */
export function formatEvents(events: KubeEvent[]): string {
  const when = (e: KubeEvent) => e.lastTimestamp ?? e.eventTime ?? e.firstTimestamp ?? '';
  const rows = [...events]
    .sort((a, b) => when(a).localeCompare(when(b)))
    .map((e) => [
      when(e) || '-',
      e.metadata.namespace ?? '-',
      e.type ?? '-',
      e.reason ?? '-',
      `${e.involvedObject?.kind ?? ''}/${e.involvedObject?.name ?? ''}`,
      (e.message ?? '').replace(/\s+/g, ' ').trim(),
    ]);
  return table([['LAST SEEN', 'NAMESPACE', 'TYPE', 'REASON', 'OBJECT', 'MESSAGE'], ...rows]);
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows
    .map((row) =>
      row
        .map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!)))
        .join('   ')
        .trimEnd(),
    )
    .map((line) => `${line}\n`)
    .join('');
}

async function inParallel(work: (() => Promise<void>)[], limit: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < work.length) await work[next++]!();
  };
  await Promise.all(Array.from({ length: Math.min(limit, work.length) }, worker));
}
