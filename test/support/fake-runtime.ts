// An in-memory ContainerRuntime for unit tests of orchestration: it keeps the containers, networks
// and volumes it was asked for, plays the node agent's side of the contract (status, join and admin
// files), and fails on request, so that create and its undo can be driven without an engine.

import { Readable } from 'node:stream';
import {
  ADMIN_KUBECONFIG,
  frontDoorName,
  IMAGE_CACHE,
  JOIN_FILE,
  LABELS,
  type NodeStatus,
  STATUS_FILE,
  varVolumeName,
} from '../../shared/contract.js';
import { renderKubeconfig } from '../../shared/kubeconfig.js';
import type {
  ContainerInfo,
  ContainerRuntime,
  ExecResult,
  FileChange,
  FollowOptions,
  FrontDoorRequest,
  HubRequest,
  ImageCacheRequest,
  ImageInfo,
  LabelFilter,
  NetworkInfo,
  NetworkRequest,
  NodeRequest,
  VolumeInfo,
} from '../../cli/runtime/runtime.js';

interface FakeContainer {
  info: ContainerInfo;
  files: Map<string, string>;
  /** A node's environment (its settings). */
  env: string[];
}

function matches(labels: Record<string, string>, filter: LabelFilter): boolean {
  return filter.every((f) => {
    const [key, value] = f.split('=', 2) as [string, string | undefined];
    return value === undefined ? key in labels : labels[key] === value;
  });
}

function status(phase: NodeStatus['phase'], message: string): string {
  return JSON.stringify({ phase, message, at: new Date().toISOString() });
}

export class FakeRuntime implements ContainerRuntime {
  readonly endpoint = 'fake://engine';
  readonly containers = new Map<string, FakeContainer>();
  readonly networks = new Map<string, NetworkInfo>();
  readonly volumes = new Map<string, VolumeInfo>();
  readonly images = new Map<string, ImageInfo>([
    ['vind/node:v1.36.3', { id: 'sha256:node', labels: {}, size: 1 }],
  ]);
  /** Calls by method name, for assertions. */
  readonly calls: string[] = [];
  /** Makes a method fail: called with the method name and its first argument. */
  failWhen: (method: string, subject: string) => Error | undefined = () => undefined;
  /** Answers a command run with `exec` in place of the default (success, the command echoed). */
  execAnswer: (container: string, command: string[]) => ExecResult | undefined = () => undefined;
  /** Commands run with `exec`, as `<container>: <command>`. */
  readonly execs: string[] = [];
  /** Delays a method (ms), to make parallel work finish in a chosen order. */
  delayOf: (method: string, subject: string) => number = () => 0;

  private async enter(method: string, subject: string): Promise<void> {
    this.calls.push(`${method} ${subject}`);
    const delay = this.delayOf(method, subject);
    if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay));
    const error = this.failWhen(method, subject);
    if (error) throw error;
  }

  /** Everything this fake holds, for "nothing left behind" checks. */
  leftovers(): string[] {
    return [
      ...[...this.containers.keys()].map((n) => `container ${n}`),
      ...[...this.networks.keys()].map((n) => `network ${n}`),
      ...[...this.volumes.keys()].map((n) => `volume ${n}`),
    ];
  }

  async ping(): Promise<void> {
    await this.enter('ping', '');
  }

  /** Bytes free on the fake engine's disk; plenty unless a test says otherwise. */
  freeDisk = 100 * 1024 ** 3;

  async dataDisk(): Promise<{ path: string; free: number }> {
    return { path: '/var/lib/docker', free: this.freeDisk };
  }

  routable = true;

  async containersRoutableFromHost(): Promise<boolean> {
    return this.routable;
  }

  async canRunPrivileged(): Promise<boolean> {
    return true;
  }

  async inspectImage(reference: string): Promise<ImageInfo | undefined> {
    return this.images.get(reference);
  }

  async saveImages(): Promise<Readable> {
    return Readable.from([]);
  }

  async createNetwork(request: NetworkRequest): Promise<void> {
    await this.enter('createNetwork', request.name);
    if (this.networks.has(request.name)) throw new Error(`network ${request.name} already exists`);
    this.networks.set(request.name, {
      id: `id-${request.name}`,
      name: request.name,
      labels: request.labels,
      subnets: [request.subnet],
    });
  }

  async removeNetwork(nameOrId: string): Promise<void> {
    await this.enter('removeNetwork', nameOrId);
    for (const [name, n] of this.networks)
      if (name === nameOrId || n.id === nameOrId) this.networks.delete(name);
  }

  async listNetworks(labels?: LabelFilter): Promise<NetworkInfo[]> {
    return [...this.networks.values()].filter((n) => !labels || matches(n.labels, labels));
  }

  async usedSubnets(): Promise<string[]> {
    return [...this.networks.values()].flatMap((n) => n.subnets);
  }

  async connectNetwork(network: string, container: string): Promise<void> {
    await this.enter('connectNetwork', container);
    const c = this.containers.get(container);
    if (c && !c.info.networks.includes(network)) c.info.networks.push(network);
  }

  async disconnectNetwork(network: string, container: string): Promise<void> {
    const c = this.containers.get(container);
    if (c) c.info.networks = c.info.networks.filter((n) => n !== network);
  }

  async hostAddressOn(): Promise<string> {
    return '172.30.0.1';
  }

  async createVolume(name: string, labels: Record<string, string>): Promise<void> {
    await this.enter('createVolume', name);
    this.volumes.set(name, { name, labels });
  }

  async removeVolume(name: string): Promise<void> {
    this.volumes.delete(name);
  }

  async listVolumes(labels: LabelFilter): Promise<VolumeInfo[]> {
    return [...this.volumes.values()].filter((v) => matches(v.labels, labels));
  }

  private addContainer(name: string, labels: Record<string, string>, network: string): FakeContainer {
    const container: FakeContainer = {
      info: {
        id: `id-${name}`,
        name,
        state: 'running',
        exitCode: 0,
        labels,
        networks: [network],
        startedAt: new Date().toISOString(),
      },
      files: new Map(),
      env: [],
    };
    this.containers.set(name, container);
    return container;
  }

  async runNode(request: NodeRequest): Promise<void> {
    if (this.volumes.has(varVolumeName(request.name))) {
      throw new Error(`volume ${varVolumeName(request.name)} already exists`);
    }
    await this.createVolume(varVolumeName(request.name), {
      [LABELS.cluster]: request.cluster,
      [LABELS.role]: request.role,
    });
    await this.enter('runNode', request.name);
    const container = this.addContainer(
      request.name,
      { [LABELS.cluster]: request.cluster, [LABELS.role]: request.role, ...request.labels },
      request.network,
    );
    for (const file of request.files ?? []) container.files.set(file.path, file.content);
    container.env = request.env;
    if (request.role === 'control-plane') {
      // What the control plane's agent writes once the API server answers.
      container.files.set(STATUS_FILE, status('ready', 'control plane ready'));
      container.files.set(
        JOIN_FILE,
        JSON.stringify({
          server: 'https://172.30.0.2:6443',
          token: 'abcdef.0123456789abcdef',
          caCertHash: 'sha256:00',
        }),
      );
      container.files.set(
        ADMIN_KUBECONFIG,
        renderKubeconfig({
          contextName: 'vind',
          server: 'https://172.30.0.2:6443',
          caData: 'Q0E=',
          clientCertData: 'Q0VSVA==',
          clientKeyData: 'S0VZ',
        }),
      );
    } else {
      container.files.set(STATUS_FILE, status('starting', 'waiting for the join configuration'));
    }
  }

  async runImageCache(request: ImageCacheRequest): Promise<void> {
    await this.createVolume(IMAGE_CACHE.volume, { [LABELS.role]: 'image-cache' });
    await this.enter('runImageCache', IMAGE_CACHE.container);
    this.addContainer(IMAGE_CACHE.container, { [LABELS.role]: 'image-cache' }, request.network);
  }

  async runHub(request: HubRequest): Promise<void> {
    await this.createVolume(varVolumeName(request.name), {
      [LABELS.cluster]: request.cluster,
      [LABELS.role]: 'hub',
    });
    await this.enter('runHub', request.name);
    const container = this.addContainer(
      request.name,
      { [LABELS.cluster]: request.cluster, [LABELS.role]: 'hub' },
      request.network,
    );
    container.env = request.env;
    for (const file of request.files) container.files.set(file.path, file.content);
  }

  async runFrontDoor(request: FrontDoorRequest): Promise<void> {
    const name = frontDoorName(request.cluster);
    await this.enter('runFrontDoor', name);
    const container = this.addContainer(
      name,
      { [LABELS.cluster]: request.cluster, [LABELS.role]: 'front-door', ...request.labels },
      request.network,
    );
    container.env = request.env;
    container.info.image = request.image;
  }

  async startContainer(name: string): Promise<void> {
    await this.enter('startContainer', name);
    const c = this.containers.get(name);
    if (c && c.info.state !== 'running') {
      c.info.state = 'running';
      c.info.startedAt = new Date().toISOString();
    }
  }

  /** Restart policy per container, as `setRestartPolicy` left it. */
  readonly restartPolicies = new Map<string, string>();

  async stopContainer(name: string): Promise<void> {
    await this.enter('stopContainer', name);
    const c = this.containers.get(name);
    if (c) c.info.state = 'exited';
  }

  async pauseContainer(name: string): Promise<void> {
    await this.enter('pauseContainer', name);
    const c = this.containers.get(name);
    if (c) c.info.state = 'paused';
  }

  async unpauseContainer(name: string): Promise<void> {
    await this.enter('unpauseContainer', name);
    const c = this.containers.get(name);
    if (c?.info.state === 'paused') c.info.state = 'running';
  }

  async setRestartPolicy(name: string, policy: 'no' | 'unless-stopped'): Promise<void> {
    await this.enter('setRestartPolicy', `${name} ${policy}`);
    this.restartPolicies.set(name, policy);
  }

  async removeContainer(nameOrId: string): Promise<void> {
    for (const [name, c] of this.containers)
      if (name === nameOrId || c.info.id === nameOrId) this.containers.delete(name);
  }

  async inspectContainer(name: string): Promise<ContainerInfo | undefined> {
    return this.containers.get(name)?.info;
  }

  async inspectContainerJson(name: string): Promise<unknown> {
    const c = this.containers.get(name);
    return c && { Id: c.info.id, Name: `/${name}`, State: { Status: c.info.state }, Config: { Env: c.env } };
  }

  async listContainers(labels: LabelFilter): Promise<ContainerInfo[]> {
    return [...this.containers.values()].map((c) => c.info).filter((c) => matches(c.labels, labels));
  }

  async exec(container: string, command: string[]): Promise<ExecResult> {
    await this.enter('exec', container);
    this.execs.push(`${container}: ${command.join(' ')}`);
    const answer = this.execAnswer(container, command);
    if (answer) return answer;
    if (command[0] === 'printenv') {
      const prefix = `${command[1]}=`;
      const entry = this.containers.get(container)?.env.find((e) => e.startsWith(prefix));
      if (entry === undefined) return { exitCode: 1, stdout: '', stderr: '' };
      return { exitCode: 0, stdout: `${entry.slice(prefix.length)}\n`, stderr: '' };
    }
    // `rm -f <file>`, as the CLI removes a cluster's token from the image cache.
    if (command[0] === 'rm' && command[1] === '-f') {
      for (const path of command.slice(2)) this.containers.get(container)?.files.delete(path);
    }
    return { exitCode: 0, stdout: command.join(' '), stderr: '' };
  }

  async readFile(container: string, path: string): Promise<string | undefined> {
    return this.containers.get(container)?.files.get(path);
  }

  async *followFiles(container: string, paths: string[], options: FollowOptions): AsyncIterable<FileChange> {
    await this.enter('followFiles', container);
    const seen = new Map<string, string>();
    const until = Date.now() + options.timeoutMs;
    while (Date.now() < until && !options.signal?.aborted) {
      const c = this.containers.get(container);
      if (!c || c.info.state !== 'running') return;
      for (const path of paths) {
        const content = (c.files.get(path) ?? '').split('\n')[0]!;
        if (seen.get(path) !== content) {
          seen.set(path, content);
          yield { path, content };
        }
      }
      const first = seen.get(paths[0]!) ?? '';
      if (options.endWhenFirstHas.some((marker) => first.includes(marker))) return;
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  }

  async writeFile(container: string, path: string, content: string): Promise<void> {
    await this.enter('writeFile', container);
    const c = this.containers.get(container);
    if (!c) throw new Error(`no container ${container}`);
    c.files.set(path, content);
    // A worker's agent joins once the join file is there.
    if (path === JOIN_FILE) c.files.set(STATUS_FILE, status('ready', `joined as ${container}`));
  }

  /** What `logs` answers for a container (its output); nothing by default. */
  logsOf: (container: string) => string = () => '';

  async logs(container: string): Promise<string> {
    await this.enter('logs', container);
    return this.logsOf(container);
  }
}
