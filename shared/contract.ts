// The contract between the host CLI and the node agent inside every container, written once:
// labels on Docker objects, paths and ports inside the node image, the images every node holds, the
// files the agent writes for the CLI (status, join information) and how a node's settings travel
// from the CLI to the agent (container environment). Either side changes only through this module.

import type { RemoteSettings } from './remote-nodes.js';
import { hostAddress, ipToInt, parseCidr } from './subnets.js';

export const VIND_VERSION = '0.1.0';

// ---- labels: Docker is the record of what exists ----

export const LABELS = {
  cluster: 'dev.vind.cluster',
  role: 'dev.vind.role',
  version: 'dev.vind.version',
  /** On the control plane: the API server's port on the host's 127.0.0.1. */
  apiPort: 'dev.vind.api-port',
  kubernetesVersion: 'dev.vind.kubernetes-version',
  /** On the control plane: an external datastore, its password hidden, for what `delete` leaves there. */
  datastore: 'dev.vind.datastore',
  /** On node images: the hash of everything the image was built from. */
  inputsHash: 'dev.vind.inputs-hash',
  /** On a host-port forwarder: the LoadBalancer address whose ports it publishes on the host. */
  loadBalancerAddress: 'dev.vind.load-balancer-address',
  /** On a sleeping cluster's record (a volume): how it sleeps and since when (RFC 3339). */
  sleepMode: 'dev.vind.sleep-mode',
  sleepSince: 'dev.vind.sleep-since',
  /** On a remote node's container and network, on the remote machine: the node's name. */
  remoteNode: 'dev.vind.remote-node',
  /** On a front door: its auto-sleep idle time (a duration such as 30m), absent when it has none. */
  sleepAfter: 'dev.vind.sleep-after',
  /** On the control plane: `networking.cni` (`default` or `none`), for what waking waits for. */
  cni: 'dev.vind.cni',
} as const;

/** The container command names the role the agent plays; `probe` is a throw-away capability check. */
export type NodeRole = 'control-plane' | 'worker';
export type ContainerRole = NodeRole | 'image-cache' | 'host-port' | 'front-door' | 'hub' | 'probe';

// ---- the node image ----

export const NODE_IMAGE_REPOSITORY = 'vind/node';
export const AGENT_PATH = '/opt/vind/node-agent.mjs';
export const PRELOADED_IMAGES_DIR = '/opt/vind/images';
/**
 * What the image build prepares once so that no node does it at start: written by the agent's
 * `image-seed` command in a throw-away container of the built image, then committed into it.
 */
export const SEED = {
  dir: '/opt/vind/seed',
  /** containerd's root with the preloaded images already unpacked. */
  containerdRoot: '/opt/vind/seed/containerd',
  /** The embedded datastore after a first API server start, without anything cluster-specific. */
  datastore: '/opt/vind/seed/kine/state.db',
  /** The agent command the build runs in the seeding container. */
  command: 'image-seed',
  /** A tmpfs of the seeding container only, where the seeds are made before they are copied in. */
  work: '/opt/vind/seed-work',
} as const;

export function nodeImage(kubernetesVersion: string): string {
  return `${NODE_IMAGE_REPOSITORY}:${kubernetesVersion}`;
}

/** Addon images built with the node image and preloaded into every node's containerd. */
export const PAUSE_VERSION = '3.10';
export const COREDNS_VERSION = 'v1.15.0';
export const PAUSE_IMAGE = `vind.dev/pause:${PAUSE_VERSION}`;
export const COREDNS_IMAGE = `vind.dev/coredns:${COREDNS_VERSION}`;
export const METRICS_SERVER_VERSION = 'v0.9.0';
export const METRICS_SERVER_IMAGE = `vind.dev/metrics-server:${METRICS_SERVER_VERSION}`;
/** The default StorageClass's provisioner, and the shell its helper pods run (busybox, from Debian). */
export const LOCAL_PATH_PROVISIONER_VERSION = 'v0.0.30';
export const LOCAL_PATH_PROVISIONER_IMAGE = `vind.dev/local-path-provisioner:${LOCAL_PATH_PROVISIONER_VERSION}`;
export const LOCAL_PATH_HELPER_IMAGE = `vind.dev/local-path-helper:${LOCAL_PATH_PROVISIONER_VERSION}`;
/** Where every node keeps those volumes: on the node's /var volume, so they outlive its container. */
export const LOCAL_VOLUMES_DIR = '/var/local-path-provisioner';

// ---- ports, names and paths inside a cluster ----

export const API_SERVER_PORT = 6443;

export const STATE_DIR = '/var/lib/vind';
export const STATUS_FILE = '/run/vind/status';
export const JOIN_FILE = `${STATE_DIR}/join.json`;
/** The control plane's certificates and keys; leaf certificates are renewed at a start near their expiry. */
export const PKI_DIR = `${STATE_DIR}/pki`;
/** Admin credentials for the API server at the control plane's address on the cluster network. */
export const ADMIN_KUBECONFIG = `${STATE_DIR}/admin.conf`;
/**
 * On the control plane: an external datastore's URL, passwords included, readable by root only. Put
 * there by the CLI before the container starts, so no password shows in `docker inspect` or `ps`.
 */
export const DATASTORE_URL_FILE = `${STATE_DIR}/datastore.url`;

export function networkName(cluster: string): string {
  return `vind-${cluster}`;
}

export function controlPlaneName(cluster: string): string {
  return `${cluster}-control-plane`;
}

/** The container that holds the API server's host port and wakes a sleeping cluster. */
export function frontDoorName(cluster: string): string {
  return `${cluster}-front-door`;
}

export function workerName(cluster: string, index: number): string {
  return index === 0 ? `${cluster}-worker` : `${cluster}-worker${index + 1}`;
}

/** Every node keeps /var in a named volume: containerd's snapshots cannot live on overlayfs. */
/**
 * A sleeping cluster's record: an empty volume whose labels say how and since when it sleeps. Docker
 * keeps it across engine restarts and reboots, and `delete` takes it with the cluster's other objects.
 */
export function sleepRecordName(cluster: string): string {
  return `${cluster}-sleep`;
}

export const SLEEP_MODES = ['pause', 'stop', 'checkpoint'] as const;
export type SleepMode = (typeof SLEEP_MODES)[number];

export function varVolumeName(container: string): string {
  return `${container}-var`;
}

export function contextName(cluster: string): string {
  return `vind-${cluster}`;
}

// ---- the image cache: one per Docker host, shared by every cluster ----

const IMAGE_CACHE_ROOT = '/var/lib/vind-cache';
/** Only root can enter it: the Docker socket and the user's Docker config, for the engine broker alone. */
const IMAGE_CACHE_ENGINE_DIR = '/run/vind-engine';

export const IMAGE_CACHE = {
  container: 'vind-image-cache',
  volume: 'vind-image-cache',
  port: 5000,
  root: IMAGE_CACHE_ROOT,
  /** One file per cluster, named after it, holding that cluster's token (64 hex digits). */
  tokens: `${IMAGE_CACHE_ROOT}/tokens`,
  /** The request header that carries a cluster's token; containerd sends it from hosts.toml. */
  tokenHeader: 'X-Vind-Cache-Token',
  /** The size limit of the blobs (`parseByteSize`); wins over the environment variable. */
  limitFile: `${IMAGE_CACHE_ROOT}/limit`,
  limitEnv: 'VIND_CACHE_LIMIT',
  defaultLimit: 20 * 1024 ** 3,
  engineDir: IMAGE_CACHE_ENGINE_DIR,
  /**
   * The user's Docker config folder, mounted read-only: a folder, not the file, so that a
   * `docker login` after the cache started (which replaces config.json) is seen.
   */
  dockerConfigDir: `${IMAGE_CACHE_ENGINE_DIR}/docker-config`,
  dockerConfig: `${IMAGE_CACHE_ENGINE_DIR}/docker-config/config.json`,
  /**
   * Credentials the CLI read through the user's credential helpers (credsStore, credHelpers), which
   * run on the host only; refreshed by every `vind create` and `vind cache`. Same form as `auths`.
   */
  helperCredentials: `${IMAGE_CACHE_ENGINE_DIR}/helper-credentials.json`,
  dockerSocket: `${IMAGE_CACHE_ENGINE_DIR}/docker.sock`,
} as const;

export const IMAGE_CACHE_URL = `http://${IMAGE_CACHE.container}:${IMAGE_CACHE.port}`;

/** Where a cluster's token lives inside the cache container. */
export function imageCacheTokenFile(cluster: string): string {
  return `${IMAGE_CACHE.tokens}/${cluster}`;
}

// ---- addresses ----

export const DEFAULT_POD_SUBNET = '10.244.0.0/16';
export const DEFAULT_SERVICE_SUBNET = '10.96.0.0/16';

/** The `kubernetes` Service: the first address of the Service network. */
export function kubernetesServiceAddress(serviceSubnet: string): string {
  return hostAddress(parseCidr(serviceSubnet), 1);
}

/** Cluster DNS (the kube-dns Service): the tenth address of the Service network, as kubeadm does. */
export function clusterDnsAddress(serviceSubnet: string): string {
  return hostAddress(parseCidr(serviceSubnet), 10);
}

// ---- files the agent writes for the CLI ----

/**
 * starting, then ready; `retrying` after a failure that may heal (a datastore still down), with the
 * reason and when the next attempt comes; `failed` when waiting cannot help (a refused password).
 */
export type NodePhase = 'starting' | 'ready' | 'retrying' | 'failed';

/** Kinds of failure the CLI tells apart from the rest (STATUS_FILE's `reason`). */
export const STATUS_REASONS = {
  /** The external datastore does not answer: at a restart the agent waits for it; `create` stops. */
  datastoreUnreachable: 'datastore-unreachable',
} as const;

/** STATUS_FILE: a failed or retrying phase carries the one line to show the user. */
export interface NodeStatus {
  phase: NodePhase;
  message: string;
  at: string;
  reason?: string;
}

/** JOIN_FILE on the control plane (and written into workers): the `kubeadm join` contract. */
export interface JoinInfo {
  /** https://<control plane address>:6443 */
  server: string;
  /** A bootstrap token, id.secret */
  token: string;
  /** sha256:<hex> of the CA's SubjectPublicKeyInfo */
  caCertHash: string;
  /** RFC 3339; absent in a join file written into a worker */
  expiration?: string;
}

export function parseNodeStatus(text: string | undefined): NodeStatus | undefined {
  if (!text) return undefined;
  try {
    const value = JSON.parse(text) as Partial<NodeStatus>;
    if (!['starting', 'ready', 'retrying', 'failed'].includes(value.phase ?? '')) return undefined;
    return {
      phase: value.phase as NodePhase,
      message: value.message ?? '',
      at: value.at ?? '',
      ...(value.reason ? { reason: value.reason } : {}),
    };
  } catch {
    return undefined; // half written by an older agent, or not yet there
  }
}

export function parseJoinInfo(text: string): JoinInfo {
  const value = JSON.parse(text) as Partial<JoinInfo>;
  if (!value.server || !value.token || !value.caCertHash) {
    throw new Error('the join information lacks server, token or caCertHash');
  }
  return {
    server: value.server,
    token: value.token,
    caCertHash: value.caCertHash,
    expiration: value.expiration,
  };
}

// ---- a node's settings, from the CLI to the agent, as container environment ----

interface CommonNodeSettings {
  nodeName: string;
  /** The node's fixed address on the cluster network. */
  nodeIp: string;
  podSubnet: string;
  serviceSubnet: string;
  /** The image cache (registry mirror and host-port publisher); absent: none. */
  imageCache?: string;
  /** This cluster's token for the image cache, sent with every request to it. */
  imageCacheToken?: string;
  /** `default`: vind's pod network (bridge, pod routes, NetworkPolicy); `none`: the user installs a CNI. */
  cni: CniChoice;
}

export const CNI_CHOICES = ['default', 'none'] as const;
export type CniChoice = (typeof CNI_CHOICES)[number];
/** `default`: a default StorageClass of node-local volumes; `none`: the user installs storage (a CSI driver). */
export const STORAGE_CHOICES = ['default', 'none'] as const;
export type StorageChoice = (typeof STORAGE_CHOICES)[number];

/** Pod Security Standards, least strict first; upstream's default is privileged. */
export const POD_SECURITY_LEVELS = ['privileged', 'baseline', 'restricted'] as const;
export type PodSecurityLevel = (typeof POD_SECURITY_LEVELS)[number];

/**
 * Where a cluster keeps its objects in an external datastore: its own key prefix, so that clusters
 * can share one database, and `delete` can say what stays there. The embedded store is the cluster's
 * own and keeps the usual /registry.
 */
export function datastoreSpace(cluster: string): string {
  return `/vind/${cluster}`;
}

/** The ConfigMap that says which cluster a datastore space belongs to (its id, made on first start). */
export const CLUSTER_MARKER = { namespace: 'kube-system', name: 'vind-cluster' } as const;

export interface ControlPlaneSettings extends CommonNodeSettings {
  role: 'control-plane';
  clusterName: string;
  /** Take over a datastore space that another cluster of this name left behind. */
  reuseDatastore: boolean;
  /** Enforced, audited and warned where a namespace sets no level of its own. */
  podSecurity: PodSecurityLevel;
  /** The embedded SQLite, or an external datastore whose URL is in DATASTORE_URL_FILE. */
  datastore: 'sqlite' | 'external';
  loadBalancer: LoadBalancerSettings;
  storage: StorageChoice;
}

/**
 * How a worker learns where to join: now, later from JOIN_FILE, through the hub's tunnel (a remote
 * node, whose settings are in VIND_REMOTE: `RemoteSettings` of shared/remote-nodes.ts), or not at all
 * (a bare runtime).
 */
export type JoinSource =
  | { kind: 'inline'; join: JoinInfo }
  | { kind: 'file' }
  | { kind: 'remote'; remote: RemoteSettings }
  | { kind: 'none' };

export interface WorkerSettings extends CommonNodeSettings {
  role: 'worker';
  labels: Record<string, string>;
  join: JoinSource;
}

export type NodeSettings = ControlPlaneSettings | WorkerSettings;

const ENV = {
  nodeName: 'VIND_NODE_NAME',
  nodeIp: 'VIND_NODE_IP',
  podSubnet: 'VIND_POD_SUBNET',
  serviceSubnet: 'VIND_SERVICE_SUBNET',
  datastore: 'VIND_DATASTORE',
  podSecurity: 'VIND_POD_SECURITY',
  clusterName: 'VIND_CLUSTER_NAME',
  reuseDatastore: 'VIND_REUSE_DATASTORE',
  labels: 'VIND_NODE_LABELS',
  imageCache: 'VIND_IMAGE_CACHE',
  imageCacheToken: 'VIND_IMAGE_CACHE_TOKEN',
  joinServer: 'VIND_JOIN_SERVER',
  joinToken: 'VIND_JOIN_TOKEN',
  joinCaHash: 'VIND_JOIN_CA_HASH',
  joinFromFile: 'VIND_JOIN_FROM_FILE',
  remote: 'VIND_REMOTE',
  loadBalancerRange: 'VIND_LOAD_BALANCER_RANGE',
  loadBalancerHostPorts: 'VIND_LOAD_BALANCER_HOST_PORTS',
  cni: 'VIND_CNI',
  storage: 'VIND_STORAGE',
} as const;

/** The container environment (`KEY=value` entries) that carries a node's settings. */
export function encodeNodeEnv(settings: NodeSettings): string[] {
  const env: Record<string, string> = {
    [ENV.nodeName]: settings.nodeName,
    [ENV.nodeIp]: settings.nodeIp,
    [ENV.podSubnet]: settings.podSubnet,
    [ENV.serviceSubnet]: settings.serviceSubnet,
    [ENV.cni]: settings.cni,
  };
  if (settings.imageCache) env[ENV.imageCache] = settings.imageCache;
  if (settings.imageCacheToken) env[ENV.imageCacheToken] = settings.imageCacheToken;
  if (settings.role === 'control-plane') {
    env[ENV.datastore] = settings.datastore;
    env[ENV.podSecurity] = settings.podSecurity;
    env[ENV.clusterName] = settings.clusterName;
    if (settings.reuseDatastore) env[ENV.reuseDatastore] = '1';
    env[ENV.loadBalancerRange] = `${settings.loadBalancer.first}-${settings.loadBalancer.last}`;
    if (settings.loadBalancer.hostPorts) env[ENV.loadBalancerHostPorts] = '1';
    env[ENV.storage] = settings.storage;
  } else {
    env[ENV.labels] = JSON.stringify(settings.labels);
    if (settings.join.kind === 'file') env[ENV.joinFromFile] = '1';
    if (settings.join.kind === 'remote') env[ENV.remote] = JSON.stringify(settings.join.remote);
    if (settings.join.kind === 'inline') {
      env[ENV.joinServer] = settings.join.join.server;
      env[ENV.joinToken] = settings.join.join.token;
      env[ENV.joinCaHash] = settings.join.join.caCertHash;
    }
  }
  return Object.entries(env).map(([key, value]) => `${key}=${value}`);
}

/** One of a fixed set of words; absent means the first (the default), anything else is refused. */
function choice<T extends string>(
  env: Record<string, string | undefined>,
  key: string,
  choices: readonly [T, ...T[]],
): T {
  const value = env[key] || choices[0];
  if (!(choices as readonly string[]).includes(value)) {
    throw new Error(`${key} is "${value}": use ${choices.join(' or ')}`);
  }
  return value as T;
}

/** Reads a node's settings back; a missing value is named, since the node cannot start without it. */
export function decodeNodeEnv(role: NodeRole, env: Record<string, string | undefined>): NodeSettings {
  const required = (key: string): string => {
    const value = env[key];
    if (!value) throw new Error(`${key} is not set: the ${role} cannot start without it`);
    return value;
  };
  const common: CommonNodeSettings = {
    nodeName: required(ENV.nodeName),
    nodeIp: required(ENV.nodeIp),
    podSubnet: env[ENV.podSubnet] || DEFAULT_POD_SUBNET,
    serviceSubnet: env[ENV.serviceSubnet] || DEFAULT_SERVICE_SUBNET,
    imageCache: env[ENV.imageCache] || undefined,
    imageCacheToken: env[ENV.imageCacheToken] || undefined,
    cni: choice(env, ENV.cni, CNI_CHOICES),
  };
  if (role === 'control-plane') {
    const datastore = env[ENV.datastore] || 'sqlite';
    if (datastore !== 'sqlite' && datastore !== 'external') {
      throw new Error(`${ENV.datastore} is "${datastore}": use sqlite or external`);
    }
    const podSecurity = env[ENV.podSecurity] || 'privileged';
    if (!(POD_SECURITY_LEVELS as readonly string[]).includes(podSecurity)) {
      throw new Error(`${ENV.podSecurity} is "${podSecurity}": use ${POD_SECURITY_LEVELS.join(', ')}`);
    }
    return {
      ...common,
      role,
      datastore,
      podSecurity: podSecurity as PodSecurityLevel,
      clusterName: required(ENV.clusterName),
      reuseDatastore: env[ENV.reuseDatastore] === '1',
      loadBalancer: {
        ...parseAddressRange(required(ENV.loadBalancerRange), ENV.loadBalancerRange),
        hostPorts: env[ENV.loadBalancerHostPorts] === '1',
      },
      storage: choice(env, ENV.storage, STORAGE_CHOICES),
    };
  }
  let join: JoinSource = { kind: 'none' };
  if (env[ENV.joinServer]) {
    join = {
      kind: 'inline',
      join: {
        server: required(ENV.joinServer),
        token: required(ENV.joinToken),
        caCertHash: required(ENV.joinCaHash),
      },
    };
  } else if (env[ENV.joinFromFile]) {
    join = { kind: 'file' };
  } else if (env[ENV.remote]) {
    try {
      join = { kind: 'remote', remote: JSON.parse(env[ENV.remote]!) as RemoteSettings };
    } catch {
      throw new Error(`${ENV.remote} is not a JSON object of a remote node's settings`);
    }
  }
  let labels: Record<string, string> = {};
  const labelText = env[ENV.labels];
  if (labelText) {
    try {
      labels = JSON.parse(labelText) as Record<string, string>;
    } catch {
      throw new Error(`${ENV.labels} is not a JSON object of label keys and values`);
    }
  }
  return {
    ...common,
    role,
    labels,
    join,
  };
}

// ---- LoadBalancer Services ----

export interface LoadBalancerSettings {
  /** The addresses handed to LoadBalancer Services, inclusive, inside the cluster network. */
  first: string;
  last: string;
  /** Also publish every LoadBalancer port on the Docker host's 127.0.0.1 (through the image cache). */
  hostPorts: boolean;
}

/** `A.B.C.D-A.B.C.E`, both IPv4, first <= last. */
export function parseAddressRange(text: string, what: string): { first: string; last: string } {
  const [first, last, extra] = text.split('-');
  const valid = (a?: string) => a !== undefined && /^\d{1,3}(\.\d{1,3}){3}$/.test(a);
  if (!valid(first) || !valid(last) || extra !== undefined || ipToInt(first!) > ipToInt(last!)) {
    throw new Error(`${what} is "${text}": use FIRST-LAST, two IPv4 addresses, the first not above the last`);
  }
  return { first: first!, last: last! };
}

export const LOAD_BALANCER = {
  /** The spec.loadBalancerClass vind serves; Services that set no class are served as well. */
  className: 'vind.dev/load-balancer',
  /** Kubernetes' own cloud-controller finalizer: the address is released before the Service goes. */
  finalizer: 'service.kubernetes.io/load-balancer-cleanup',
  /** Asks for a fixed address, as the deprecated spec.loadBalancerIP does. */
  addressAnnotation: 'vind.dev/load-balancer-ip',
  /** Written by the controller: where each port is published on the Docker host, when it is. */
  hostPortsAnnotation: 'vind.dev/host-ports',
  /** Which node announces which address: data `<address>: <node name>`, read by every worker. */
  announcements: { namespace: 'kube-system', name: 'vind-load-balancer-announcements' },
  /** kube-proxy's health endpoint on each worker's node address, the controller's liveness probe. */
  nodeHealthPort: 10256,
  /** The component named in the Events the controller writes. */
  component: 'vind-load-balancer',
} as const;

export type PortProtocol = 'TCP' | 'UDP';

/** One LoadBalancer address and the ports of it to publish on the Docker host. */
export interface HostPortForward {
  address: string;
  ports: { port: number; protocol: PortProtocol }[];
}

/** What got published: each port with the host port on 127.0.0.1 that reaches it. */
export interface PublishedForward {
  address: string;
  ports: { port: number; protocol: PortProtocol; hostPort: number }[];
}

/**
 * The image cache's host-port endpoint on the cluster network. The control plane PUTs the whole
 * desired set ({forwards: HostPortForward[]}) with its cache token; the answer is
 * {forwards: PublishedForward[]}. The cache makes one forwarder container per address.
 */
export const HOST_PORTS_PATH = '/vind/v1/host-ports';
/** A cluster's front door asks the image cache (POST, with the cluster's token) to wake or pause it. */
export const WAKE_PATH = '/vind/v1/wake';
export const SLEEP_PATH = '/vind/v1/sleep';

export type PowerOperation = 'wake' | 'sleep';

/** The answer to a wake or a sleep asked at WAKE_PATH or SLEEP_PATH. */
export interface PowerAnswer {
  /** awake: nothing to do; woke: it slept and was woken; slept: put to sleep now; asleep: it was. */
  state: 'awake' | 'woke' | 'slept' | 'asleep';
  /** For `woke`: the mode it slept in. */
  from?: SleepMode;
}
/** Written by the control plane's controller, read by `vind list`. */
export const LOAD_BALANCER_STATE_FILE = '/run/vind/load-balancers.json';

export interface LoadBalancerState {
  /** FIRST-LAST */
  range: string;
  /** Addresses in use by LoadBalancer Services. */
  addresses: number;
  hostPorts: { address: string; port: number; protocol: PortProtocol; hostPort: number }[];
}

/** Listening address of every published port on the Docker host. */
export const HOST_PORTS_LISTEN = '127.0.0.1';

/**
 * Sleep mode checkpoint. The CLI runs `checkCommand` in the control plane to learn whether the mode is
 * available, then `command` there (`docker exec`), which asks the running agent over `socket` to dump
 * the control plane's daemons with CRIU into `dir`, on the node's volume, and stop them; it prints a
 * `CheckpointReport`. At its next start the control-plane role restores the daemons from `dir` and
 * removes it, restored or not (a failed restore falls back to a normal start).
 */
export const CHECKPOINT = {
  dir: `${STATE_DIR}/checkpoint`,
  socket: '/run/vind/agent.sock',
  checkCommand: ['criu', 'check'],
  command: ['/usr/bin/node', AGENT_PATH, 'checkpoint'],
  /**
   * The control plane's daemons run with process ids from here up: a restore needs every id its
   * processes and threads had, and a fresh container uses low ids before it restores.
   */
  pidBase: 10_000,
} as const;

/** What `CHECKPOINT.command` prints (one JSON line) when the daemons are checkpointed. */
export interface CheckpointReport {
  daemons: string[];
  /** Bytes of the images on the node's volume. */
  bytes: number;
  /** How long the dumps took. */
  ms: number;
}

// ---- the front door: the API server's host port, wake on demand and auto-sleep ----

/** What a cluster's front door is told, in its environment (FRONT_DOOR_ENV, JSON). */
export interface FrontDoorSettings {
  cluster: string;
  /** The API server on the cluster network: the control plane's address and API_SERVER_PORT. */
  upstream: { host: string; port: number };
  imageCache: string;
  imageCacheToken: string;
  /** Pause the cluster after this long without a byte from or to a client; 0: never. */
  sleepAfterMs: number;
}

export const FRONT_DOOR_ENV = 'VIND_FRONT_DOOR';

export function encodeFrontDoorEnv(settings: FrontDoorSettings): string[] {
  return [`${FRONT_DOOR_ENV}=${JSON.stringify(settings)}`];
}

export function decodeFrontDoorEnv(env: Record<string, string | undefined>): FrontDoorSettings {
  const text = env[FRONT_DOOR_ENV];
  if (!text) throw new Error(`${FRONT_DOOR_ENV} is not set: the front door cannot start without it`);
  const settings = JSON.parse(text) as FrontDoorSettings;
  if (
    typeof settings.cluster !== 'string' ||
    typeof settings.upstream?.host !== 'string' ||
    !Number.isInteger(settings.upstream.port) ||
    typeof settings.imageCache !== 'string' ||
    typeof settings.imageCacheToken !== 'string' ||
    !(Number.isFinite(settings.sleepAfterMs) && settings.sleepAfterMs >= 0)
  ) {
    throw new Error(`${FRONT_DOOR_ENV} is not a front door's settings: ${text.slice(0, 200)}`);
  }
  return settings;
}
