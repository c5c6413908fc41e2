// Clusters that exist: found by label on the engine (Docker is the record; there is no state file),
// listed, deleted with everything they made, their kubeconfig printed, host images copied in.

import { X509Certificate } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import {
  ADMIN_KUBECONFIG,
  API_SERVER_PORT,
  contextName,
  controlPlaneName,
  datastoreSpace,
  HOST_PORTS_LISTEN,
  LABELS,
  LOAD_BALANCER_STATE_FILE,
  type LoadBalancerState,
  type SleepMode,
  parseNodeStatus,
  PKI_DIR,
  STATUS_FILE,
} from '../shared/contract.js';
import { VindError } from '../shared/errors.js';
import { credentialsFromKubeconfig, renderKubeconfig } from '../shared/kubeconfig.js';
import { detachImageCache, removeCacheToken } from './image-cache.js';
import { kubeconfigPath, removeFromKubeconfigFile } from './kubeconfig.js';
import type { Reporter } from './progress.js';
import type { ContainerInfo, ContainerRuntime, ContainerState, VolumeInfo } from './runtime/runtime.js';

/** Names of every cluster that has a container, volume or network on this engine. */
export async function clusterNames(runtime: ContainerRuntime): Promise<string[]> {
  const names = new Set<string>();
  for (const c of await runtime.listContainers([LABELS.cluster])) names.add(c.labels[LABELS.cluster] ?? '');
  for (const n of await runtime.listNetworks([LABELS.cluster])) names.add(n.labels[LABELS.cluster] ?? '');
  for (const v of await runtime.listVolumes([LABELS.cluster])) names.add(v.labels[LABELS.cluster] ?? '');
  names.delete('');
  return [...names].sort();
}

/**
 * Removes every container, volume and network of the cluster, its token from the image cache, and
 * its kubeconfig context.
 */
export interface DeletedCluster {
  /** Whether there was anything to delete. */
  removed: boolean;
  /** What stays behind in an external datastore, which vind does not own: its URL and the space. */
  keptInDatastore?: { datastore: string; space: string };
}

export async function deleteCluster(
  runtime: ContainerRuntime,
  name: string,
  kubeconfig?: string,
): Promise<DeletedCluster> {
  const filter = [`${LABELS.cluster}=${name}`];
  await removeCacheToken(runtime, name);
  const containers = await runtime.listContainers(filter);
  const datastore = containers.find((c) => c.labels[LABELS.datastore])?.labels[LABELS.datastore];
  await Promise.all(containers.map((c) => runtime.removeContainer(c.id)));
  // A host-port forwarder the image cache was making for the control plane while it went.
  const late = await runtime.listContainers(filter);
  await Promise.all(late.map((c) => runtime.removeContainer(c.id)));
  const volumes = await runtime.listVolumes(filter);
  await Promise.all(volumes.map((v) => runtime.removeVolume(v.name)));
  const networks = await runtime.listNetworks(filter);
  await Promise.all(
    networks.map(async (n) => {
      await detachImageCache(runtime, n.name);
      await runtime.removeNetwork(n.id);
    }),
  );
  const removedContext = await removeFromKubeconfigFile(kubeconfig ?? kubeconfigPath(), contextName(name));
  return {
    removed: containers.length + volumes.length + networks.length > 0 || removedContext,
    keptInDatastore: datastore ? { datastore, space: datastoreSpace(name) } : undefined,
  };
}

export interface ClusterSummary {
  name: string;
  state: string;
  nodes: number;
  kubernetesVersion: string;
  endpoint: string;
  /** When the first of the control plane's certificates expires (RFC 3339), when it can be read. */
  certificatesExpire?: string;
  /** Nodes whose agent failed or is trying again, with its reason: `dev-worker: retrying: ...`. */
  problems: string[];
  /** Set while the cluster sleeps (`vind sleep`). */
  sleeping?: SleepRecord;
  /** The front door's auto-sleep idle time (`30m`), when it has one. */
  sleepAfter?: string;
  /** LoadBalancer addresses in use, when the control plane runs. */
  loadBalancers?: number;
  /** LoadBalancer ports published on the Docker host: `172.30.0.128:80/TCP -> 127.0.0.1:49153`. */
  hostPorts?: string[];
}

export interface SleepRecord {
  mode: SleepMode;
  /** RFC 3339 */
  since: string;
}

/** How a cluster sleeps and since when, from its record; undefined when it is awake. */
export async function sleepRecord(
  runtime: ContainerRuntime,
  cluster: string,
): Promise<SleepRecord | undefined> {
  const [volume] = await runtime.listVolumes([`${LABELS.cluster}=${cluster}`, LABELS.sleepMode]);
  return volume && recordOf(volume);
}

function recordIn(records: VolumeInfo[], cluster: string): SleepRecord | undefined {
  const volume = records.find((v) => v.labels[LABELS.cluster] === cluster);
  return volume && recordOf(volume);
}

function recordOf(volume: VolumeInfo): SleepRecord {
  return {
    mode: volume.labels[LABELS.sleepMode] as SleepMode,
    since: volume.labels[LABELS.sleepSince] ?? '',
  };
}

async function loadBalancerState(
  runtime: ContainerRuntime,
  controlPlane: string,
): Promise<LoadBalancerState | undefined> {
  const text = await runtime.readFile(controlPlane, LOAD_BALANCER_STATE_FILE).catch(() => undefined);
  try {
    return text ? (JSON.parse(text) as LoadBalancerState) : undefined;
  } catch {
    return undefined;
  }
}

/** What the agents of running nodes report that is not well: failed, or retrying after a failure. */
async function nodeProblems(runtime: ContainerRuntime, nodes: ContainerInfo[]): Promise<string[]> {
  const problems: string[] = [];
  for (const node of nodes) {
    if (node.state !== 'running' || node.labels[LABELS.role] === 'image-cache') continue;
    const status = parseNodeStatus(await runtime.readFile(node.name, STATUS_FILE).catch(() => undefined));
    if (status?.phase === 'failed' || status?.phase === 'retrying') {
      problems.push(`${node.name}: ${status.phase}: ${status.message}`);
    }
  }
  return problems;
}

/** The earliest expiry among PEM certificates. */
export function earliestExpiry(pemText: string): string | undefined {
  const blocks = pemText.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  let earliest: number | undefined;
  for (const block of blocks) {
    const expires = Date.parse(new X509Certificate(block).validTo);
    if (earliest === undefined || expires < earliest) earliest = expires;
  }
  return earliest === undefined ? undefined : new Date(earliest).toISOString();
}

async function certificatesExpire(
  runtime: ContainerRuntime,
  controlPlane: string,
): Promise<string | undefined> {
  const result = await runtime
    .exec(controlPlane, ['sh', '-c', `cat ${PKI_DIR}/*.crt`])
    .catch(() => undefined);
  return result?.exitCode === 0 ? earliestExpiry(result.stdout) : undefined;
}

export function summarizeState(states: ContainerState[], failing = false): string {
  if (states.length === 0) return 'no containers';
  if (states.every((s) => s === 'running')) return failing ? 'failing' : 'running';
  if (states.every((s) => s === 'paused')) return 'paused';
  if (states.every((s) => s === 'exited' || s === 'created')) return 'stopped';
  return 'degraded';
}

export async function listClusters(runtime: ContainerRuntime): Promise<ClusterSummary[]> {
  const containers = await runtime.listContainers([LABELS.cluster]);
  // Every sleeping cluster's record at once, rather than one look per cluster.
  const records = await runtime.listVolumes([LABELS.cluster, LABELS.sleepMode]);
  const summaries: ClusterSummary[] = [];
  for (const name of await clusterNames(runtime)) {
    // Nodes only: a cluster's host-port forwarders carry its label too.
    const own = containers.filter(
      (c) =>
        c.labels[LABELS.cluster] === name &&
        (c.labels[LABELS.role] === 'control-plane' || c.labels[LABELS.role] === 'worker'),
    );
    const controlPlane = own.find((c) => c.labels[LABELS.role] === 'control-plane');
    const port = controlPlane?.labels[LABELS.apiPort];
    const problems = await nodeProblems(runtime, own);
    const balancers =
      controlPlane?.state === 'running' ? await loadBalancerState(runtime, controlPlane.name) : undefined;
    summaries.push({
      name,
      state: summarizeState(
        own.map((c) => c.state),
        problems.length > 0,
      ),
      nodes: own.length,
      kubernetesVersion: controlPlane?.labels[LABELS.kubernetesVersion] ?? '',
      endpoint: port ? `https://127.0.0.1:${port}` : '',
      certificatesExpire:
        controlPlane?.state === 'running' ? await certificatesExpire(runtime, controlPlane.name) : undefined,
      problems,
      sleeping: recordIn(records, name),
      sleepAfter: containers.find(
        (c) => c.labels[LABELS.cluster] === name && c.labels[LABELS.role] === 'front-door',
      )?.labels[LABELS.sleepAfter],
      loadBalancers: balancers?.addresses,
      hostPorts: balancers?.hostPorts.map(
        (p) => `${p.address}:${p.port}/${p.protocol} -> ${HOST_PORTS_LISTEN}:${p.hostPort}`,
      ),
    });
  }
  return summaries;
}

export async function clusterKubeconfig(
  runtime: ContainerRuntime,
  name: string,
  internal: boolean,
): Promise<string> {
  const controlPlane = controlPlaneName(name);
  const info = await runtime.inspectContainer(controlPlane);
  if (!info) throw new VindError(`cluster "${name}" does not exist: see \`vind list\``);
  if (info.state !== 'running')
    throw new VindError(`cluster "${name}" is not running: start or wake it first`);
  const admin = await runtime.readFile(controlPlane, ADMIN_KUBECONFIG);
  if (!admin) throw new VindError(`cluster "${name}" has no admin credentials yet: it is still starting`);
  const server = internal
    ? `https://${controlPlane}:${API_SERVER_PORT}`
    : `https://127.0.0.1:${info.labels[LABELS.apiPort]}`;
  return renderKubeconfig(credentialsFromKubeconfig(admin, contextName(name), server));
}

/** Copies host images into every node of a cluster: one `docker save`, imported by each node's containerd. */
export async function loadImages(
  runtime: ContainerRuntime,
  name: string,
  references: string[],
  reporter: Reporter,
): Promise<void> {
  const nodes = (await runtime.listContainers([`${LABELS.cluster}=${name}`, `${LABELS.role}=worker`])).filter(
    (c) => c.state === 'running',
  );
  if (nodes.length === 0) throw new VindError(`cluster "${name}" has no running worker: see \`vind list\``);
  for (const reference of references) {
    if (!(await runtime.inspectImage(reference))) {
      throw new VindError(`image ${reference} is not in the host's Docker: pull or build it first`);
    }
  }
  const scratch = await mkdtemp(join(tmpdir(), 'vind-load-'));
  try {
    const archive = join(scratch, 'images.tar');
    await reporter.step(`save ${references.join(', ')}`, async () => {
      await pipeline(await runtime.saveImages(references), createWriteStream(archive));
    });
    await reporter.step(`import into ${nodes.length} node${nodes.length > 1 ? 's' : ''}`, async () => {
      await Promise.all(
        nodes.map(async (node) => {
          const result = await runtime.exec(
            node.name,
            ['ctr', '-n', 'k8s.io', 'images', 'import', '--platform', 'linux/amd64', '-'],
            createReadStream(archive),
          );
          if (result.exitCode !== 0) {
            throw new VindError(
              `importing into ${node.name} failed: ${result.stderr.trim().split('\n').at(-1)}`,
            );
          }
        }),
      );
    });
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
