// The cluster lifecycle: create (a pipeline of named steps, each undone on failure), delete, list,
// kubeconfig and image load. Docker is the record: every object carries dev.vind.* labels.

import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parse } from 'yaml';
import type { ClusterConfig, PortMapping } from './cluster-config.js';
import {
  createNetwork,
  createVolume,
  docker,
  ensureDockerReachable,
  execInContainer,
  inspectImage,
  LABEL_CLUSTER,
  LABEL_KUBERNETES_VERSION,
  LABEL_ROLE,
  listContainers,
  listNetworks,
  listVolumes,
  networkExists,
  readContainerFile,
  removeContainer,
  removeNetwork,
  removeVolume,
  saveImages,
  usedSubnets,
} from './docker.js';
import { InterruptedError, VindError } from '../shared/errors.js';
import { kubeconfigPath, mergeIntoKubeconfigFile, removeFromKubeconfigFile } from './kubeconfig.js';
import { type ClusterCredentials, renderKubeconfig } from '../shared/kubeconfig.js';
import {
  apiReady,
  deploymentAvailable,
  isNodeReady,
  type KubeTarget,
  listNodes,
  targetFromKubeconfig,
} from '../shared/kubernetes.js';
import { CACHE_URL, detachImageCache, ensureImageCache, removeImageCache } from './image-cache.js';
import { detectSecurityMode, nodeContainerSpec, type NodeRole } from './node-container.js';
import type { Reporter } from './progress.js';
import { clusterAddressPlan, hostAddress, parseCidr, pickClusterSubnet } from '../shared/subnets.js';

export const LABEL_API_PORT = 'dev.vind.api-port';
export const API_PORT_IN_CONTAINER = 6443;

export function networkName(cluster: string): string {
  return `vind-${cluster}`;
}

export function controlPlaneName(cluster: string): string {
  return `${cluster}-control-plane`;
}

export function workerName(cluster: string, index: number): string {
  return index === 0 ? `${cluster}-worker` : `${cluster}-worker${index + 1}`;
}

export function contextName(cluster: string): string {
  return `vind-${cluster}`;
}

/** Undo actions of the steps done so far, run last-first when create fails or is interrupted. */
class Rollback {
  private readonly actions: (() => Promise<void>)[] = [];
  add(action: () => Promise<void>): void {
    this.actions.push(action);
  }
  async run(): Promise<void> {
    for (const action of this.actions.reverse()) await action().catch(() => undefined);
  }
}

interface NodeStatus {
  phase: 'starting' | 'ready' | 'failed';
  message: string;
}

async function nodeStatus(container: string): Promise<NodeStatus | undefined> {
  const text = await readContainerFile(container, '/run/vind/status').catch(() => undefined);
  if (!text) return undefined;
  try {
    return JSON.parse(text) as NodeStatus;
  } catch {
    return undefined;
  }
}

async function sleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) throw new InterruptedError();
  await new Promise((resolve) => setTimeout(resolve, ms));
  if (signal.aborted) throw new InterruptedError();
}

async function waitUntil<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  deadline: number,
  signal: AbortSignal,
  intervalMs = 200,
): Promise<T> {
  for (;;) {
    // A VindError from the probe is a verdict (a node failed); anything else is "not yet".
    const value = await probe().catch((error: unknown) => {
      if (error instanceof VindError) throw error;
      return undefined;
    });
    if (value !== undefined) return value;
    if (Date.now() > deadline) {
      throw new VindError(
        `timed out waiting for ${what}: raise --wait, or keep the containers with --retain to look`,
      );
    }
    await sleep(intervalMs, signal);
  }
}

/** Waits for node-agent in a container to report ready; a failed node ends the wait at once. */
async function waitForNode(container: string, deadline: number, signal: AbortSignal): Promise<void> {
  await waitUntil(
    `${container} to start`,
    async () => {
      const status = await nodeStatus(container);
      if (status?.phase === 'failed') throw new VindError(`${container}: ${status.message}`);
      if (status?.phase === 'ready') return true;
      const info = await docker().getContainer(container).inspect();
      if (info.State.Restarting || !info.State.Running) {
        throw new VindError(
          `${container} exited (code ${info.State.ExitCode}); see \`docker logs ${container}\``,
        );
      }
      return undefined;
    },
    deadline,
    signal,
  );
}

async function portIsFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

function portBindings(mappings: PortMapping[]): Record<string, { HostIp: string; HostPort: string }[]> {
  const bindings: Record<string, { HostIp: string; HostPort: string }[]> = {};
  for (const m of mappings) {
    const key = `${m.containerPort}/${m.protocol.toLowerCase()}`;
    (bindings[key] ??= []).push({ HostIp: m.listenAddress, HostPort: String(m.hostPort) });
  }
  return bindings;
}

/**
 * inotify instances are counted per user across the host, and every node container runs as root.
 * Measured: a control plane holds about 13, an idle worker 9, growing with its pods; 24 per worker
 * leaves room for workloads. The default limit of 128 runs out at about five workers.
 */
export function inotifyWarning(limit: number, workers: number): string | undefined {
  const needed = 16 + 24 * workers;
  if (needed <= limit) return undefined;
  return (
    `fs.inotify.max_user_instances is ${limit}, low for ${workers} workers (about ${needed} needed); nodes ` +
    'may fail with "too many open files": raise it with `sudo sysctl fs.inotify.max_user_instances=1024`'
  );
}

async function warnAboutInotify(workers: number, reporter: Reporter): Promise<void> {
  let limit: number;
  try {
    limit = Number((await readFile('/proc/sys/fs/inotify/max_user_instances', 'utf8')).trim());
  } catch {
    return; // not a Linux host: Docker runs in a VM whose limits are not visible from here
  }
  const warning = inotifyWarning(limit, workers);
  if (warning) reporter.warn(warning);
}

export async function clusterExists(name: string): Promise<boolean> {
  const containers = await listContainers([`${LABEL_CLUSTER}=${name}`]);
  return containers.length > 0 || (await networkExists(networkName(name)));
}

export interface CreateOptions {
  config: ClusterConfig;
  /** Milliseconds to wait for readiness; undefined waits until ready. 0 returns once the API answers. */
  waitMs?: number;
  retain: boolean;
  kubeconfig?: string;
  reporter: Reporter;
  signal: AbortSignal;
}

export interface CreatedCluster {
  name: string;
  server: string;
  context: string;
  kubeconfigPath: string;
}

export async function createCluster(options: CreateOptions): Promise<CreatedCluster> {
  const { config, reporter, signal } = options;
  const rollback = new Rollback();
  const name = config.name;
  const labels = { [LABEL_CLUSTER]: name };
  // Without --wait the wait is long but not endless, so a broken start still ends.
  const waitMs = options.waitMs ?? 15 * 60_000;
  const deadline = () => Date.now() + (waitMs === 0 ? 5 * 60_000 : waitMs);
  const path = options.kubeconfig ?? kubeconfigPath();

  try {
    const { securityMode, apiPort } = await reporter.step('check host', async (note) => {
      await ensureDockerReachable();
      if (await clusterExists(name)) {
        throw new VindError(
          `cluster "${name}" already exists: delete it with \`vind delete ${name}\` or choose another name`,
        );
      }
      const image = await inspectImage(config.image);
      if (!image) {
        const version = config.kubernetesVersion;
        throw new VindError(
          `node image ${config.image} is not built: build it with \`vind image build --kubernetes-version ${version}\``,
        );
      }
      const apiPort = config.apiServerPort || (await freePort());
      const hostPorts = [
        { hostPort: apiPort, listenAddress: '127.0.0.1', what: 'the API server' },
        ...[config.controlPlane, ...config.workers].flatMap((n) =>
          n.extraPortMappings.map((m) => ({ ...m, what: `port mapping ${m.hostPort}:${m.containerPort}` })),
        ),
      ];
      for (const p of hostPorts) {
        if (!(await portIsFree(p.hostPort, p.listenAddress))) {
          throw new VindError(
            `host port ${p.listenAddress}:${p.hostPort} for ${p.what} is already in use: choose another port`,
          );
        }
      }
      await warnAboutInotify(config.workers.length, reporter);
      const securityMode = await detectSecurityMode(config.image);
      note(securityMode === 'privileged' ? 'privileged nodes' : 'nodes with capabilities, not privileged');
      return { securityMode, apiPort };
    });

    const plan = await reporter.step('create network', async (note) => {
      // Two creates at once may pick the same free subnet; Docker refuses the second, which then picks again.
      for (let attempt = 1; ; attempt++) {
        const subnet = pickClusterSubnet([...(await usedSubnets()), config.podSubnet, config.serviceSubnet]);
        const plan = clusterAddressPlan(subnet);
        try {
          await createNetwork({
            name: networkName(name),
            subnet,
            gateway: plan.gateway,
            ipRange: plan.dynamicRange,
            labels,
          });
        } catch (error) {
          if (attempt < 8 && /overlap/i.test((error as Error).message)) {
            // The other network may not be listed yet: wait for it before picking again.
            await sleep(150 * attempt, signal);
            continue;
          }
          throw error;
        }
        rollback.add(() => removeNetwork(networkName(name)));
        note(subnet);
        return plan;
      }
    });

    const startNode = async (
      container: string,
      role: NodeRole,
      address: string,
      env: string[],
      mappings: PortMapping[],
      extraBindings: Record<string, { HostIp: string; HostPort: string }[]> = {},
      extraLabels: Record<string, string> = {},
    ) => {
      const varVolume = `${container}-var`;
      await createVolume(varVolume, { ...labels, [LABEL_ROLE]: role });
      rollback.add(() => removeVolume(varVolume));
      const spec = nodeContainerSpec({
        name: container,
        cluster: name,
        role,
        image: config.image,
        securityMode,
        varVolume,
        network: networkName(name),
        ipv4Address: address,
        env: [`VIND_NODE_NAME=${container}`, `VIND_NODE_IP=${address}`, ...env],
        portBindings: { ...portBindings(mappings), ...extraBindings },
        labels: { [LABEL_KUBERNETES_VERSION]: config.kubernetesVersion, ...extraLabels },
      });
      spec.ExposedPorts = Object.fromEntries(
        Object.keys(spec.HostConfig?.PortBindings ?? {}).map((k) => [k, {}]),
      );
      const created = await docker().createContainer(spec);
      rollback.add(() => removeContainer(container));
      await created.start();
    };

    const controlPlane = controlPlaneName(name);
    const workers = config.workers.map((spec, index) => ({
      spec,
      container: workerName(name, index),
      index,
    }));
    // Workers start with the control plane: their runtime comes up while it boots, and they join
    // once it hands out the join configuration.
    await reporter.step(`start ${workers.length + 1} containers`, async () => {
      rollback.add(async () => {
        await detachImageCache(networkName(name));
        if ((await clusterNames()).every((other) => other === name)) await removeImageCache(false);
      });
      await Promise.all([
        ensureImageCache(config.image, networkName(name)),
        startNode(
          controlPlane,
          'control-plane',
          plan.controlPlane,
          [
            `VIND_POD_SUBNET=${config.podSubnet}`,
            `VIND_SERVICE_SUBNET=${config.serviceSubnet}`,
            `VIND_DATASTORE=${config.datastore.kind === 'sqlite' ? 'sqlite' : config.datastore.url}`,
          ],
          config.controlPlane.extraPortMappings,
          { [`${API_PORT_IN_CONTAINER}/tcp`]: [{ HostIp: '127.0.0.1', HostPort: String(apiPort) }] },
          { [LABEL_API_PORT]: String(apiPort) },
        ),
        ...workers.map((worker) =>
          startNode(
            worker.container,
            'worker',
            plan.worker(worker.index),
            [
              'VIND_JOIN_FROM_FILE=1',
              `VIND_IMAGE_CACHE=${CACHE_URL}`,
              `VIND_POD_SUBNET=${config.podSubnet}`,
              `VIND_SERVICE_SUBNET=${config.serviceSubnet}`,
              `VIND_CLUSTER_DNS=${hostAddress(parseCidr(config.serviceSubnet), 10)}`,
              `VIND_NODE_LABELS=${JSON.stringify(worker.spec.labels)}`,
            ],
            worker.spec.extraPortMappings,
          ),
        ),
      ]);
    });

    const admin = await reporter.step('start control plane', async () => {
      await waitForNode(controlPlane, deadline(), signal);
      const joinText = await readContainerFile(controlPlane, '/var/lib/vind/join.json');
      const adminConf = await readContainerFile(controlPlane, '/var/lib/vind/admin.conf');
      const join = JSON.parse(joinText ?? '{}') as { server?: string; token?: string; caCertHash?: string };
      if (!adminConf || !join.token)
        throw new VindError(`${controlPlane} did not write its join information`);
      return { join: { server: join.server, token: join.token, caCertHash: join.caCertHash }, adminConf };
    });

    if (workers.length > 0) {
      await reporter.step(`join ${workers.length} worker${workers.length > 1 ? 's' : ''}`, async () => {
        const joinFile = JSON.stringify(admin.join);
        await Promise.all(
          workers.map(async ({ container }) => {
            const written = await execInContainer(
              container,
              [
                'sh',
                '-c',
                'mkdir -p /var/lib/vind && cat > /var/lib/vind/join.json.tmp && mv /var/lib/vind/join.json.tmp /var/lib/vind/join.json',
              ],
              Readable.from([joinFile]),
            );
            if (written.exitCode !== 0)
              throw new VindError(
                `${container}: writing the join configuration failed: ${written.stderr.trim()}`,
              );
            await waitForNode(container, deadline(), signal);
          }),
        );
      });
    }

    const credentials = credentialsFromAdmin(
      admin.adminConf,
      contextName(name),
      `https://127.0.0.1:${apiPort}`,
    );
    await reporter.step('write kubeconfig', async (note) => {
      await mergeIntoKubeconfigFile(path, credentials);
      rollback.add(async () => {
        await removeFromKubeconfigFile(path, credentials.contextName);
      });
      note(`${path}, context ${credentials.contextName}`);
    });

    const target = targetFromKubeconfig(renderKubeconfig(credentials));
    await reporter.step('wait for the API server', () =>
      waitUntil(
        'the API server',
        async () => ((await apiReady(target)) ? true : undefined),
        deadline(),
        signal,
      ),
    );
    if (waitMs !== 0 && config.workers.length > 0) {
      await reporter.step('wait for nodes Ready', () =>
        waitForNodesReady(target, config.workers.length, deadline(), signal),
      );
      await reporter.step('wait for CoreDNS', () =>
        waitUntil(
          'CoreDNS to be available',
          async () => ((await deploymentAvailable(target, 'kube-system', 'coredns')) ? true : undefined),
          deadline(),
          signal,
        ),
      );
    }
    return { name, server: credentials.server, context: credentials.contextName, kubeconfigPath: path };
  } catch (error) {
    if (options.retain) {
      reporter.warn(
        `keeping the containers of "${name}" (--retain); remove them with \`vind delete ${name}\``,
      );
    } else {
      await rollback.run();
    }
    throw error;
  }
}

async function waitForNodesReady(target: KubeTarget, count: number, deadline: number, signal: AbortSignal) {
  await waitUntil(
    `${count} node${count > 1 ? 's' : ''} to be Ready`,
    async () => {
      const nodes = await listNodes(target);
      return nodes.filter(isNodeReady).length >= count ? true : undefined;
    },
    deadline,
    signal,
    500,
  );
}

interface AdminKubeconfig {
  clusters: { cluster: { 'certificate-authority-data': string } }[];
  users: { user: { 'client-certificate-data': string; 'client-key-data': string } }[];
}

export function credentialsFromAdmin(adminConf: string, context: string, server: string): ClusterCredentials {
  const doc = parse(adminConf) as AdminKubeconfig;
  return {
    contextName: context,
    server,
    caData: doc.clusters[0]!.cluster['certificate-authority-data'],
    clientCertData: doc.users[0]!.user['client-certificate-data'],
    clientKeyData: doc.users[0]!.user['client-key-data'],
  };
}

/** Names of every cluster that has a container, volume or network on this engine. */
export async function clusterNames(): Promise<string[]> {
  const names = new Set<string>();
  for (const c of await listContainers([LABEL_CLUSTER])) names.add(c.Labels[LABEL_CLUSTER]!);
  for (const n of await listNetworks([LABEL_CLUSTER])) names.add(n.Labels?.[LABEL_CLUSTER] ?? '');
  for (const v of await listVolumes([LABEL_CLUSTER])) names.add(v.Labels?.[LABEL_CLUSTER] ?? '');
  names.delete('');
  return [...names].sort();
}

export async function deleteCluster(name: string, kubeconfig?: string): Promise<boolean> {
  const filter = [`${LABEL_CLUSTER}=${name}`];
  const containers = await listContainers(filter);
  await Promise.all(containers.map((c) => removeContainer(c.Id)));
  const volumes = await listVolumes(filter);
  await Promise.all(volumes.map((v) => removeVolume(v.Name)));
  const networks = await listNetworks(filter);
  await Promise.all(
    networks.map(async (n) => {
      await detachImageCache(n.Name);
      await removeNetwork(n.Id);
    }),
  );
  const removedContext = await removeFromKubeconfigFile(kubeconfig ?? kubeconfigPath(), contextName(name));
  return containers.length + volumes.length + networks.length > 0 || removedContext;
}

export interface ClusterSummary {
  name: string;
  state: string;
  nodes: number;
  kubernetesVersion: string;
  endpoint: string;
}

function summarizeState(states: string[]): string {
  if (states.length === 0) return 'no containers';
  if (states.every((s) => s === 'running')) return 'running';
  if (states.every((s) => s === 'paused')) return 'paused';
  if (states.every((s) => s === 'exited' || s === 'created')) return 'stopped';
  return 'degraded';
}

export async function listClusters(): Promise<ClusterSummary[]> {
  const containers = await listContainers([LABEL_CLUSTER]);
  const summaries: ClusterSummary[] = [];
  for (const name of await clusterNames()) {
    const own = containers.filter((c) => c.Labels[LABEL_CLUSTER] === name);
    const controlPlane = own.find((c) => c.Labels[LABEL_ROLE] === 'control-plane');
    const port = controlPlane?.Labels[LABEL_API_PORT];
    summaries.push({
      name,
      state: summarizeState(own.map((c) => c.State)),
      nodes: own.length,
      kubernetesVersion: controlPlane?.Labels[LABEL_KUBERNETES_VERSION] ?? '',
      endpoint: port ? `https://127.0.0.1:${port}` : '',
    });
  }
  return summaries;
}

export async function clusterKubeconfig(name: string, internal: boolean): Promise<string> {
  const controlPlane = controlPlaneName(name);
  const info = await docker()
    .getContainer(controlPlane)
    .inspect()
    .catch(() => undefined);
  if (!info) throw new VindError(`cluster "${name}" does not exist: see \`vind list\``);
  if (!info.State.Running) throw new VindError(`cluster "${name}" is not running: start or wake it first`);
  const adminConf = await readContainerFile(controlPlane, '/var/lib/vind/admin.conf');
  if (!adminConf) throw new VindError(`cluster "${name}" has no admin credentials yet: it is still starting`);
  const server = internal
    ? `https://${controlPlane}:${API_PORT_IN_CONTAINER}`
    : `https://127.0.0.1:${info.Config.Labels[LABEL_API_PORT]}`;
  return renderKubeconfig(credentialsFromAdmin(adminConf, contextName(name), server));
}

/** Copies host images into every node of a cluster: one `docker save`, imported by each node's containerd. */
export async function loadImages(name: string, references: string[], reporter: Reporter): Promise<void> {
  const nodes = (await listContainers([`${LABEL_CLUSTER}=${name}`, `${LABEL_ROLE}=worker`])).filter(
    (c) => c.State === 'running',
  );
  if (nodes.length === 0) throw new VindError(`cluster "${name}" has no running worker: see \`vind list\``);
  for (const reference of references) {
    if (!(await inspectImage(reference))) {
      throw new VindError(`image ${reference} is not in the host's Docker: pull or build it first`);
    }
  }
  const scratch = await mkdtemp(join(tmpdir(), 'vind-load-'));
  try {
    const archive = join(scratch, 'images.tar');
    await reporter.step(`save ${references.join(', ')}`, async () => {
      await pipeline(await saveImages(references), createWriteStream(archive));
    });
    await reporter.step(`import into ${nodes.length} node${nodes.length > 1 ? 's' : ''}`, async () => {
      await Promise.all(
        nodes.map(async (node) => {
          const container = node.Names[0]!.replace(/^\//, '');
          const result = await execInContainer(
            container,
            ['ctr', '-n', 'k8s.io', 'images', 'import', '--platform', 'linux/amd64', '-'],
            createReadStream(archive),
          );
          if (result.exitCode !== 0) {
            throw new VindError(
              `importing into ${container} failed: ${result.stderr.trim().split('\n').at(-1)}`,
            );
          }
        }),
      );
    });
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
