// What vind asks of a container engine, in its own terms. The CLI sees only this interface: the
// dockerode implementation (docker-runtime.ts) is one provider, and a fake one drives the create
// pipeline in unit tests. Removal is idempotent everywhere: "no such object" is not an error.

import type { Readable } from 'node:stream';
import type { NodeRole } from '../../shared/contract.js';

export type SecurityMode = 'privileged' | 'capabilities';

export interface PortMapping {
  containerPort: number;
  hostPort: number;
  listenAddress: string;
  protocol: 'TCP' | 'UDP';
}

/** A file put into a container before it starts (a secret that must not travel as environment). */
export interface ContainerFile {
  path: string;
  content: string;
  mode: number;
}

/** A node container (control plane or worker); the provider decides every engine flag. */
export interface NodeRequest {
  name: string;
  cluster: string;
  role: NodeRole;
  image: string;
  securityMode: SecurityMode;
  network: string;
  address: string;
  /** The node's settings, encoded by the contract (`KEY=value`). */
  env: string[];
  ports: PortMapping[];
  /** Extra labels beyond cluster, role and version. */
  labels: Record<string, string>;
  files?: ContainerFile[];
}

/** A cluster's front door: the API server's host port, wake on demand and auto-sleep. */
export interface FrontDoorRequest {
  cluster: string;
  image: string;
  network: string;
  /** The API server's port as the host sees it. */
  port: PortMapping;
  /** Its settings, encoded by the contract. */
  env: string[];
  /** Extra labels beyond cluster, role and version. */
  labels: Record<string, string>;
}

/** A cluster's WireGuard hub, for remote nodes. */
export interface HubRequest {
  name: string;
  cluster: string;
  image: string;
  network: string;
  address: string;
  /** The UDP port on every host address: fixed, so that a restart keeps it where the remotes dial. */
  hostPort: number;
  env: string[];
  /** Put in before it starts (the admin kubeconfig). */
  files: ContainerFile[];
}

/** The image build's throw-away container that seeds a node image before it is committed. */
export interface SeedRequest {
  name: string;
  image: string;
  command: string[];
  /** Folders that get a tmpfs. */
  tmpfs: string[];
}

/** The per-host image cache container. */
export interface ImageCacheRequest {
  image: string;
  network: string;
  /** The user's Docker config folder on the host, for registry credentials, if there is one. */
  dockerConfigDir?: string;
}

export interface NetworkRequest {
  name: string;
  subnet: string;
  gateway: string;
  /** Docker's IPAM range for containers without a fixed address. */
  ipRange: string;
  labels: Record<string, string>;
}

export type ContainerState = 'created' | 'running' | 'paused' | 'restarting' | 'exited' | 'dead' | 'removing';

export interface ContainerInfo {
  id: string;
  name: string;
  state: ContainerState;
  exitCode: number;
  labels: Record<string, string>;
  /** Names of the networks the container is attached to. */
  networks: string[];
  /** When it last started (RFC 3339); only an inspect says. */
  startedAt?: string;
  /** The image it was created from, as it was named. */
  image?: string;
  /** Its IPv4 address on each network; only an inspect says. */
  addresses?: Record<string, string>;
  /** Published ports; only an inspect says. */
  ports?: { containerPort: number; protocol: string; hostIp: string; hostPort: number }[];
}

export interface NetworkInfo {
  id: string;
  name: string;
  labels: Record<string, string>;
  subnets: string[];
}

export interface VolumeInfo {
  name: string;
  labels: Record<string, string>;
}

export interface ImageInfo {
  id: string;
  labels: Record<string, string>;
  size: number;
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** A followed file's content (first line, empty while the file is absent), each time it changes. */
export interface FileChange {
  path: string;
  content: string;
}

export interface FollowOptions {
  /** The follow ends by itself once the first file's content holds one of these. */
  endWhenFirstHas: string[];
  /** And at the latest after this long, so that a follower nobody reads any more cannot outlive it. */
  timeoutMs: number;
  /** How often the files are looked at. */
  intervalMs?: number;
  /** Stops following (the loop inside still ends by itself). */
  signal?: AbortSignal;
}

/** Label filters: `key` (has the label) or `key=value`. */
export type LabelFilter = string[];

export interface ContainerRuntime {
  /** Where the engine is, for messages: `unix:///var/run/docker.sock (default socket)`. */
  readonly endpoint: string;
  /** Fails with one line that says how to reach an engine when this one does not answer. */
  ping(): Promise<void>;
  /** Where the engine keeps its data and how many bytes are free there, when that disk is this host's. */
  dataDisk(): Promise<{ path: string; free: number } | undefined>;
  /**
   * Whether this host reaches container addresses directly: a local engine on Linux, not rootless.
   * Not so with Docker Desktop, a rootless engine, or an engine on another machine.
   */
  containersRoutableFromHost(): Promise<boolean>;
  /** Whether this engine can run privileged containers (probed once per engine, then cached). */
  canRunPrivileged(probeImage: string): Promise<boolean>;

  inspectImage(reference: string): Promise<ImageInfo | undefined>;
  /** `docker save` of images, as a tar stream. */
  saveImages(references: string[]): Promise<Readable>;

  createNetwork(request: NetworkRequest): Promise<void>;
  removeNetwork(name: string): Promise<void>;
  listNetworks(labels?: LabelFilter): Promise<NetworkInfo[]>;
  /** Every IPv4 subnet any network on this engine uses. */
  usedSubnets(): Promise<string[]>;
  connectNetwork(network: string, container: string): Promise<void>;
  disconnectNetwork(network: string, container: string): Promise<void>;
  /** The host's own address on a bridge network, where host services are reached from containers. */
  hostAddressOn(network: string): Promise<string>;

  createVolume(name: string, labels: Record<string, string>): Promise<void>;
  removeVolume(name: string): Promise<void>;
  listVolumes(labels: LabelFilter): Promise<VolumeInfo[]>;

  /** Creates and starts a node container (and its /var volume). */
  runNode(request: NodeRequest): Promise<void>;
  /** Creates and starts the image cache container (and its volume). */
  runImageCache(request: ImageCacheRequest): Promise<void>;
  /** Creates and starts a cluster's front door. */
  runFrontDoor(request: FrontDoorRequest): Promise<void>;
  /** Creates and starts a cluster's WireGuard hub, its UDP port published on every host address. */
  runHub(request: HubRequest): Promise<void>;
  startContainer(name: string): Promise<void>;
  /** Stops a container, waiting up to `timeoutSeconds` for its processes before killing them. */
  stopContainer(name: string, timeoutSeconds: number): Promise<void>;
  /** Freezes every process of a container (the cgroup freezer), and thaws it. */
  pauseContainer(name: string): Promise<void>;
  unpauseContainer(name: string): Promise<void>;
  /** `no` keeps a sleeping container from being started again when the engine restarts. */
  setRestartPolicy(name: string, policy: 'no' | 'unless-stopped'): Promise<void>;
  removeContainer(name: string): Promise<void>;
  inspectContainer(name: string): Promise<ContainerInfo | undefined>;
  /** The engine's whole answer to an inspect (`docker inspect`), for logs; undefined when it is gone. */
  inspectContainerJson(name: string): Promise<unknown>;
  listContainers(labels: LabelFilter): Promise<ContainerInfo[]>;
  exec(container: string, command: string[], input?: Readable): Promise<ExecResult>;
  /** A small file out of a running container, or undefined when it is not there. */
  readFile(container: string, path: string): Promise<string | undefined>;
  /**
   * Small one-line files of a running container as they change: one long-running command inside the
   * container looks at them, instead of one `exec` per look (an exec costs the engine ~0.1 s of CPU).
   * The first answer for each file is its content at the start. Ends when the container stops.
   */
  followFiles(container: string, paths: string[], options: FollowOptions): AsyncIterable<FileChange>;
  /** Writes a file into a running container whole (temporary name, then rename). */
  writeFile(container: string, path: string, content: string): Promise<void>;
  /** The container's output (`docker logs`): the last `tail` lines, or all of it; stopped or paused too. */
  logs(container: string, tail?: number): Promise<string>;
}
