// Remote nodes: a machine anywhere joins a cluster as a worker over WireGuard (the contract is
// shared/remote-nodes.ts; the hub is node-agent/hub.ts, the remote side node-agent/remote-tunnel.ts).
//
// On the cluster's host:  `vind node add NAME --remote` makes the hub (first time), writes a pending
//                         enrollment into it and prints `vind join <secret>`; `vind node list` and
//                         `vind node remove` follow the nodes and their tunnels.
// On the remote machine:  `vind join <secret>` starts a worker container on that machine's Docker,
//                         which enrolls through the tunnel and joins; `vind leave` removes it.

import { randomBytes } from 'node:crypto';
import { createSocket } from 'node:dgram';
import { networkInterfaces } from 'node:os';
import {
  ADMIN_KUBECONFIG,
  controlPlaneName,
  encodeNodeEnv,
  FRONT_DOOR_ENV,
  decodeFrontDoorEnv,
  frontDoorName,
  IMAGE_CACHE,
  JOIN_FILE,
  LABELS,
  networkName,
  parseJoinInfo,
  STATUS_FILE,
  type NodeStatus,
  varVolumeName,
} from '../shared/contract.js';
import { VindError } from '../shared/errors.js';
import {
  internalIp,
  isNodeReady,
  kubeRequest,
  type KubeNode,
  listNodes,
  targetFromKubeconfig,
} from '../shared/kubernetes.js';
import { PermanentError, poll, PollTimeoutError } from '../shared/poll.js';
import {
  decodeJoinSecret,
  encodeJoinSecret,
  type EnrolledNode,
  type Enrollment,
  HUB,
  hubAddress,
  hubName,
  REMOTE,
  remoteNodeAddress,
} from '../shared/remote-nodes.js';
import { clusterAddressPlan, pickClusterSubnet } from '../shared/subnets.js';
import { generateKeyPair } from '../vpn/keys.js';
import { parseWgDump, type PeerState } from '../vpn/wireguard.js';
import { clusterKubeconfig, sleepRecord } from './clusters.js';
import type { Reporter } from './progress.js';
import type { ContainerInfo, ContainerRuntime } from './runtime/runtime.js';

const NODE_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
/** Labels every remote node carries: what it is, and that it announces no LoadBalancer address. */
export const REMOTE_NODE_LABELS = {
  'vind.dev/remote': 'true',
  'node.kubernetes.io/exclude-from-external-load-balancers': 'true',
};

export interface AddRemoteOptions {
  labels: Record<string, string>;
  taints: string[];
  ttlMs: number;
  /** HOST:PORT the remote dials; default: every address of this host, at the hub's published port. */
  endpoints?: string[];
  /** HOST:PORT where the hub dials the remote, which listens there (`vind join` publishes it). */
  dial?: string;
}

function checkNodeName(name: string): void {
  if (name.length > 63 || !NODE_NAME.test(name)) {
    throw new VindError(
      `"${name}" is not a node name: use lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit`,
    );
  }
}

/** `k=v,k2=v2` as node labels. */
export function parseLabels(text: string | undefined): Record<string, string> {
  if (!text) return {};
  const labels: Record<string, string> = {};
  for (const part of text.split(',')) {
    const match = /^([A-Za-z0-9./_-]+)=([A-Za-z0-9._-]*)$/.exec(part.trim());
    if (!match) throw new VindError(`"${part}" is not a label: use key=value, e.g. gpu=true`);
    labels[match[1]!] = match[2]!;
  }
  return labels;
}

/** `k=v:NoSchedule,k2:NoExecute` as taints, in the kubelet's --register-with-taints form. */
export function parseTaints(text: string | undefined): string[] {
  if (!text) return [];
  return text.split(',').map((part) => {
    const taint = part.trim();
    if (!/^[A-Za-z0-9./_-]+(=[A-Za-z0-9._-]*)?:(NoSchedule|PreferNoSchedule|NoExecute)$/.test(taint)) {
      throw new VindError(`"${part}" is not a taint: use key=value:Effect, e.g. gpu=true:NoSchedule`);
    }
    return taint;
  });
}

/** The host's own IPv4 addresses a remote machine may reach, Docker's bridges left out. */
export function hostEndpoints(port: number): string[] {
  const out: string[] = [];
  for (const [name, addresses] of Object.entries(networkInterfaces())) {
    if (/^(lo|docker\d*|br-|veth)/.test(name)) continue;
    for (const a of addresses ?? []) if (a.family === 'IPv4' && !a.internal) out.push(`${a.address}:${port}`);
  }
  return out;
}

async function readStatus(runtime: ContainerRuntime, container: string): Promise<NodeStatus | undefined> {
  const text = await runtime.readFile(container, STATUS_FILE).catch(() => undefined);
  try {
    return text ? (JSON.parse(text) as NodeStatus) : undefined;
  } catch {
    return undefined;
  }
}

async function waitReady(runtime: ContainerRuntime, container: string, timeoutMs: number): Promise<void> {
  try {
    await poll(
      `${container} to be ready`,
      async () => {
        const status = await readStatus(runtime, container);
        // A failure is final: the agent stays up, failed, for `docker logs`.
        if (status?.phase === 'failed') throw new PermanentError(status.message);
        return status?.phase === 'ready' ? true : undefined;
      },
      { timeoutMs, intervalMs: 250 },
    );
  } catch (error) {
    if (error instanceof PermanentError) throw new VindError(error.message);
    if (error instanceof PollTimeoutError) {
      const status = await readStatus(runtime, container);
      throw new VindError(
        `${container} is not ready after ${timeoutMs / 1000}s${status ? ` (${status.message})` : ''}: look with \`docker logs ${container}\``,
      );
    }
    throw error;
  }
}

/** A UDP port free on every address of this host. */
export function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = createSocket('udp4');
    socket.once('error', reject);
    socket.bind(0, '0.0.0.0', () => {
      const { port } = socket.address();
      socket.close(() => resolve(port));
    });
  });
}

/** What the hub and a join secret need to know of the cluster, read once. */
interface ClusterFacts {
  controlPlane: ContainerInfo;
  subnet: string;
  podSubnet: string;
  serviceSubnet: string;
}

async function clusterFacts(runtime: ContainerRuntime, cluster: string): Promise<ClusterFacts> {
  const controlPlane = await runtime.inspectContainer(controlPlaneName(cluster));
  if (!controlPlane) throw new VindError(`cluster "${cluster}" does not exist: see \`vind list\``);
  const network = (await runtime.listNetworks([`${LABELS.cluster}=${cluster}`])).find(
    (n) => n.name === networkName(cluster),
  );
  const subnet = network?.subnets[0];
  if (!subnet) throw new VindError(`the network of cluster "${cluster}" is gone: delete and create it again`);
  const env = await runtime.exec(controlPlane.name, ['printenv', 'VIND_POD_SUBNET', 'VIND_SERVICE_SUBNET']);
  const [podSubnet, serviceSubnet] = env.stdout.trim().split('\n');
  return { controlPlane, subnet, podSubnet: podSubnet!, serviceSubnet: serviceSubnet! };
}

/** The cluster's hub, made the first time; answers its public key and the UDP port on the host. */
async function ensureHub(
  runtime: ContainerRuntime,
  cluster: string,
  facts: ClusterFacts,
): Promise<{ publicKey: string; port: number }> {
  const name = hubName(cluster);
  let hub = await runtime.inspectContainer(name);
  if (!hub) {
    const { controlPlane, subnet, podSubnet, serviceSubnet } = facts;
    const admin = await runtime.readFile(controlPlane.name, ADMIN_KUBECONFIG);
    if (!admin) throw new VindError(`cluster "${cluster}" has no admin credentials yet: is it ready?`);
    await runtime.runHub({
      name,
      cluster,
      hostPort: await freeUdpPort(),
      image: controlPlane.image ?? '',
      network: networkName(cluster),
      address: hubAddress(subnet),
      env: [`VIND_HUB=${JSON.stringify({ cluster, clusterSubnet: subnet, podSubnet, serviceSubnet })}`],
      files: [{ path: ADMIN_KUBECONFIG, content: admin, mode: 0o600 }],
    });
    hub = await runtime.inspectContainer(name);
  }
  await waitReady(runtime, name, 60_000);
  const publicKey = (await runtime.readFile(name, HUB.publicKeyFile))?.trim();
  const port = hub?.ports?.find((p) => p.containerPort === HUB.listenPort && p.protocol === 'udp')?.hostPort;
  if (!publicKey || !port)
    throw new VindError(`the hub ${name} has no key or port yet: look with \`docker logs ${name}\``);
  return { publicKey, port };
}

/** The hub's JSON files in `dir`, each one object, read in one exec (a NUL after each file). */
async function hubFiles<T>(runtime: ContainerRuntime, cluster: string, dir: string): Promise<T[]> {
  const listed = await runtime.exec(hubName(cluster), [
    'sh',
    '-c',
    'for f in "$1"/*.json; do [ -f "$f" ] && cat "$f" && printf "\\0"; done; true',
    'sh',
    dir,
  ]);
  return listed.stdout
    .split('\0')
    .filter((text) => text.trim() !== '')
    .map((text) => JSON.parse(text) as T);
}

/** `HOST:PORT` with an IPv4 address or a name, and a port 1-65535. */
export function checkDial(text: string): string {
  const match = /^([A-Za-z0-9.-]+):(\d{1,5})$/.exec(text);
  if (!match || Number(match[2]) < 1 || Number(match[2]) > 65535) {
    throw new VindError(
      `"${text}" is not HOST:PORT: give the address and UDP port where the remote machine listens, e.g. 203.0.113.7:51820`,
    );
  }
  return text;
}

export async function addRemoteNode(
  runtime: ContainerRuntime,
  cluster: string,
  node: string,
  options: AddRemoteOptions,
): Promise<string> {
  checkNodeName(node);
  if (options.dial) checkDial(options.dial);
  if (await sleepRecord(runtime, cluster)) {
    throw new VindError(`cluster "${cluster}" is asleep: wake it with \`vind wake ${cluster}\` first`);
  }
  const controlPlane = await runtime.inspectContainer(controlPlaneName(cluster));
  if (controlPlane?.labels[LABELS.cni] === 'none') {
    // A remote node's pods are reached through the hub by vind's pod routes, which such a cluster has not.
    throw new VindError(
      `cluster "${cluster}" was made with networking.cni: none: remote nodes need vind's pod network, create a cluster without it`,
    );
  }
  const target = targetFromKubeconfig(await clusterKubeconfig(runtime, cluster, false));
  const nodes = await listNodes(target);
  if (nodes.some((n) => n.metadata.name === node)) {
    throw new VindError(`cluster "${cluster}" has a node "${node}" already: choose another name`);
  }
  const facts = await clusterFacts(runtime, cluster);
  const hub = await ensureHub(runtime, cluster, facts);
  const enrollments = await hubFiles<Enrollment>(runtime, cluster, HUB.enrollmentsDir);
  const enrolled = await hubFiles<EnrolledNode>(runtime, cluster, HUB.nodesDir);
  if (enrollments.some((e) => e.node === node && !e.usedAt) || enrolled.some((e) => e.node === node)) {
    throw new VindError(
      `"${node}" is already waiting to join: remove it with \`vind node remove ${node}\` first`,
    );
  }
  const { subnet } = facts;
  const taken = [
    ...nodes.map((n) => internalIp(n) ?? ''),
    ...enrollments.map((e) => e.address),
    ...enrolled.map((e) => e.address),
  ];
  const address = remoteNodeAddress(subnet, taken);
  if (!address) throw new VindError(`cluster "${cluster}" has no address left for another remote node`);
  const used = new Set(enrollments.map((e) => e.index));
  let index = 2;
  while (used.has(index) && index < 254) index++;
  const join = parseJoinInfo((await runtime.readFile(controlPlaneName(cluster), JOIN_FILE)) ?? '');
  const door = await runtime.exec(frontDoorName(cluster), ['printenv', FRONT_DOOR_ENV]);
  const cacheToken =
    door.exitCode === 0 ? decodeFrontDoorEnv({ [FRONT_DOOR_ENV]: door.stdout.trim() }).imageCacheToken : '';
  const cacheAddress =
    (await runtime.inspectContainer(IMAGE_CACHE.container))?.addresses?.[networkName(cluster)] ?? '';
  const key = generateKeyPair();
  const id = randomBytes(12).toString('hex');
  const expires = new Date(Date.now() + options.ttlMs).toISOString();
  const enrollment: Enrollment = {
    id,
    publicKey: key.publicKey,
    index,
    node,
    address,
    expires,
    labels: { ...REMOTE_NODE_LABELS, ...options.labels },
    taints: options.taints,
    // The hub adds a bootstrap token of its own when the node enrolls.
    join: { server: join.server, token: '', caCertHash: join.caCertHash },
    imageCache: cacheToken && cacheAddress ? { address: cacheAddress, token: cacheToken } : undefined,
    ...(options.dial ? { dial: options.dial } : {}),
  };
  await runtime.writeFile(
    hubName(cluster),
    `${HUB.enrollmentsDir}/${id}.json`,
    `${JSON.stringify(enrollment, null, 2)}\n`,
  );
  return encodeJoinSecret({
    cluster,
    node,
    address,
    hubEndpoints:
      options.endpoints?.map((e) => (e.includes(':') ? e : `${e}:${hub.port}`)) ?? hostEndpoints(hub.port),
    hubPublicKey: hub.publicKey,
    enrollmentId: id,
    enrollmentIndex: index,
    enrollmentKey: key.privateKey,
    expires,
    image: facts.controlPlane.image ?? '',
    clusterSubnet: subnet,
    podSubnet: facts.podSubnet,
    serviceSubnet: facts.serviceSubnet,
    ...(options.dial ? { listenPort: Number(options.dial.split(':').at(-1)) } : {}),
  });
}

/** The name of a remote worker's container on the remote machine. */
export function remoteContainerName(cluster: string, node: string): string {
  return `${cluster}-${node}`;
}

/** `vind join <secret>`: on the remote machine, a worker container that enrolls and joins. */
export async function joinCluster(
  runtime: ContainerRuntime,
  text: string,
  reporter: Reporter,
  options: { listen?: string } = {},
): Promise<string> {
  let secret;
  try {
    secret = decodeJoinSecret(text.trim());
  } catch (error) {
    throw new VindError((error as Error).message);
  }
  const how = `make a new one with \`vind node add ${secret.node} --remote\` on the cluster's host`;
  if (Date.parse(secret.expires) <= Date.now()) {
    throw new VindError(`this join secret expired at ${secret.expires}: ${how}`);
  }
  if (!(await runtime.inspectImage(secret.image))) {
    throw new VindError(
      `the node image ${secret.image} is not on this machine's Docker: build it here with \`vind image build\`, or copy it: \`docker save ${secret.image} | ssh THIS-MACHINE docker load\``,
    );
  }
  // A node the hub dials publishes its WireGuard port: where --listen says, else where `node add --dial` said.
  let listen: { address: string; port: number } | undefined;
  if (options.listen) {
    const match = /^(?:(\d{1,3}(?:\.\d{1,3}){3}):)?(\d{1,5})$/.exec(options.listen);
    if (!match || Number(match[2]) < 1 || Number(match[2]) > 65535) {
      throw new VindError(`--listen "${options.listen}" is not [ADDRESS:]PORT, e.g. 0.0.0.0:51820`);
    }
    listen = { address: match[1] ?? '0.0.0.0', port: Number(match[2]) };
  } else if (secret.listenPort) {
    listen = { address: '0.0.0.0', port: secret.listenPort };
  }
  const name = remoteContainerName(secret.cluster, secret.node);
  if (await runtime.inspectContainer(name)) {
    throw new VindError(
      `${name} exists on this machine already: remove it with \`vind leave ${secret.node}\``,
    );
  }
  const network = `vind-${secret.cluster}-${secret.node}`;
  const cleanup = async () => {
    await runtime.removeContainer(name);
    await runtime.removeVolume(varVolumeName(name));
    await runtime.removeNetwork(network);
  };
  try {
    const plan = await reporter.step('create network', async (note) => {
      // Not the cluster's own subnet either: that one is reached through the tunnel.
      const subnet = pickClusterSubnet([
        ...(await runtime.usedSubnets()),
        secret.clusterSubnet,
        secret.podSubnet,
        secret.serviceSubnet,
      ]);
      const plan = clusterAddressPlan(subnet);
      await runtime.createNetwork({
        name: network,
        subnet,
        gateway: plan.gateway,
        ipRange: plan.dynamicRange,
        labels: { [LABELS.cluster]: secret.cluster, [LABELS.remoteNode]: secret.node },
      });
      note(subnet);
      return plan;
    });
    const securityMode = (await runtime.canRunPrivileged(secret.image)) ? 'privileged' : 'capabilities';
    await reporter.step('start the node', () =>
      runtime.runNode({
        name,
        cluster: secret.cluster,
        role: 'worker',
        image: secret.image,
        securityMode,
        network,
        address: plan.controlPlane,
        env: encodeNodeEnv({
          role: 'worker',
          nodeName: secret.node,
          nodeIp: secret.address,
          podSubnet: secret.podSubnet,
          serviceSubnet: secret.serviceSubnet,
          // A remote node carries vind's pod network: its pod routes go through the hub's tunnel.
          cni: 'default',
          labels: {},
          join: {
            kind: 'remote',
            remote: {
              cluster: secret.cluster,
              hubEndpoints: secret.hubEndpoints,
              hubPublicKey: secret.hubPublicKey,
              enrollmentId: secret.enrollmentId,
              enrollmentIndex: secret.enrollmentIndex,
              ...(listen ? { listen: true } : {}),
            },
          },
        }),
        ports: listen
          ? [
              {
                containerPort: HUB.listenPort,
                hostPort: listen.port,
                listenAddress: listen.address,
                protocol: 'UDP',
              },
            ]
          : [],
        labels: { [LABELS.remoteNode]: secret.node },
        files: [{ path: REMOTE.enrollmentKeyFile, content: `${secret.enrollmentKey}\n`, mode: 0o600 }],
      }),
    );
    await reporter.step('enroll through the tunnel and join', () => waitReady(runtime, name, 300_000));
  } catch (error) {
    await cleanup().catch(() => undefined);
    throw error;
  }
  return name;
}

/** `vind leave [NODE]`: the remote workers on this machine's Docker, with their volumes and networks. */
export async function leaveCluster(runtime: ContainerRuntime, node?: string): Promise<string[]> {
  const filter = node ? [`${LABELS.remoteNode}=${node}`] : [LABELS.remoteNode];
  const containers = await runtime.listContainers(filter);
  if (containers.length === 0) {
    throw new VindError(
      node ? `no remote node "${node}" runs on this machine` : 'no remote node runs on this machine',
    );
  }
  for (const c of containers) {
    await runtime.removeContainer(c.name);
    await runtime.removeVolume(varVolumeName(c.name));
  }
  for (const n of await runtime.listNetworks(filter)) await runtime.removeNetwork(n.name);
  return containers.map((c) => c.name);
}

export interface NodeRow {
  name: string;
  kind: 'local' | 'remote';
  ready: boolean;
  address?: string;
  /** Remote nodes: the tunnel's peer as the hub sees it. */
  tunnel?: { endpoint?: string; latestHandshake?: string; rxBytes: number; txBytes: number };
}

export async function listClusterNodes(runtime: ContainerRuntime, cluster: string): Promise<NodeRow[]> {
  const target = targetFromKubeconfig(await clusterKubeconfig(runtime, cluster, false));
  const nodes: KubeNode[] = await listNodes(target);
  const hub = await runtime.inspectContainer(hubName(cluster));
  let peers: PeerState[] = [];
  let enrolled: EnrolledNode[] = [];
  if (hub?.state === 'running') {
    const dump = await runtime.exec(hub.name, ['wg', 'show', HUB.interface, 'dump']);
    if (dump.exitCode === 0) peers = parseWgDump(dump.stdout).peers;
    enrolled = await hubFiles<EnrolledNode>(runtime, cluster, HUB.nodesDir);
  }
  return nodes.map((n) => {
    const remote = enrolled.find((e) => e.node === n.metadata.name);
    const peer = remote && peers.find((p) => p.publicKey === remote.publicKey);
    return {
      name: n.metadata.name,
      kind: remote || n.metadata.labels?.['vind.dev/remote'] === 'true' ? 'remote' : 'local',
      ready: isNodeReady(n),
      address: internalIp(n),
      tunnel: peer
        ? {
            endpoint: peer.endpoint,
            latestHandshake: peer.latestHandshake?.toISOString(),
            rxBytes: peer.rxBytes,
            txBytes: peer.txBytes,
          }
        : undefined,
    };
  });
}

/** Drains and deletes a node; a remote one's peer and secret go with it. */
export async function removeClusterNode(
  runtime: ContainerRuntime,
  cluster: string,
  node: string,
): Promise<void> {
  const target = targetFromKubeconfig(await clusterKubeconfig(runtime, cluster, false));
  const found = (await listNodes(target)).some((n) => n.metadata.name === node);
  const hubRunning = (await runtime.inspectContainer(hubName(cluster)))?.state === 'running';
  const enrollments = hubRunning ? await hubFiles<Enrollment>(runtime, cluster, HUB.enrollmentsDir) : [];
  const ours = enrollments.filter((e) => e.node === node);
  if (!found && ours.length === 0)
    throw new VindError(`cluster "${cluster}" has no node "${node}": see \`vind node list\``);
  if (found) {
    await kubeRequest(
      target,
      'PATCH',
      `/api/v1/nodes/${node}`,
      { spec: { unschedulable: true } },
      10_000,
      'application/merge-patch+json',
    );
    const pods = await kubeRequest<{ items: { metadata: { name: string; namespace: string } }[] }>(
      target,
      'GET',
      `/api/v1/pods?fieldSelector=${encodeURIComponent(`spec.nodeName=${node}`)}`,
    );
    for (const pod of pods.body.items) {
      await kubeRequest(
        target,
        'POST',
        `/api/v1/namespaces/${pod.metadata.namespace}/pods/${pod.metadata.name}/eviction`,
        {
          apiVersion: 'policy/v1',
          kind: 'Eviction',
          metadata: { name: pod.metadata.name, namespace: pod.metadata.namespace },
        },
      );
    }
    await kubeRequest(target, 'DELETE', `/api/v1/nodes/${node}`);
  }
  if (hubRunning) {
    // The peer goes with the node's file; its secrets are marked revoked, so a late `vind join` is told.
    await runtime.exec(hubName(cluster), ['rm', '-f', `${HUB.nodesDir}/${node}.json`]);
    const revokedAt = new Date().toISOString();
    for (const e of ours) {
      await runtime.writeFile(
        hubName(cluster),
        `${HUB.enrollmentsDir}/${e.id}.json`,
        `${JSON.stringify({ ...e, revokedAt }, null, 2)}\n`,
      );
    }
  }
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}
