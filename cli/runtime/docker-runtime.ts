// The one module that talks to Docker: the ContainerRuntime of vind on the Docker Engine, through
// dockerode, at the endpoint discovery chose (DOCKER_HOST, the Docker context, or a known socket).
// Every flag comes from container-specs.ts; this file only carries requests to the engine.

import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readFile, statfs, writeFile } from 'node:fs/promises';
import { Agent } from 'node:https';
import { networkInterfaces } from 'node:os';
import { dirname, join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import Docker from 'dockerode';
import tar from 'tar-stream';
import { frontDoorName, IMAGE_CACHE, LABELS, varVolumeName } from '../../shared/contract.js';
import { VindError } from '../../shared/errors.js';
import { repositoryAndTag } from '../../shared/image-reference.js';
import { hostAddressOnBridge } from '../../shared/subnets.js';
import { cacheDir } from '../paths.js';
import {
  frontDoorContainerSpec,
  hubContainerSpec,
  imageCacheContainerSpec,
  nodeContainerSpec,
  privilegedProbeSpec,
  seedContainerSpec,
} from './container-specs.js';
import { type DiscoveredDocker, discoverDockerEndpoint } from './discovery.js';
import { followCommand, FollowParser } from './follow-files.js';
import type {
  ContainerFile,
  ContainerInfo,
  ContainerRuntime,
  ContainerState,
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
} from './runtime.js';

function statusCode(error: unknown): number | undefined {
  return (error as { statusCode?: number } | undefined)?.statusCode;
}

/** Runs a removal or detachment; "no such object" means it is already done. */
async function idempotent(work: () => Promise<unknown>, alsoFine: RegExp = /$^/): Promise<void> {
  try {
    await work();
  } catch (error) {
    if (statusCode(error) === 404 || alsoFine.test((error as Error).message)) return;
    throw error;
  }
}

interface BuildMessage {
  stream?: string;
  error?: string;
  errorDetail?: { message?: string };
  aux?: { ID?: string };
}

export class DockerRuntime implements ContainerRuntime {
  readonly client: Docker;
  readonly endpoint: string;
  /** The engine's socket path on its own host, for the image cache to mount. */
  private readonly hostSocket: string;

  constructor(found: DiscoveredDocker = discoverDockerEndpoint()) {
    const { endpoint } = found;
    if ('socketPath' in endpoint) {
      this.client = new Docker({ socketPath: endpoint.socketPath });
      this.hostSocket = endpoint.socketPath;
    } else {
      const { skipTlsVerify, ...options } = endpoint;
      // dockerode has no switch for an unverified engine certificate; an agent carries it.
      const agent = skipTlsVerify ? new Agent({ rejectUnauthorized: false }) : undefined;
      this.client = new Docker({ ...options, ...(agent ? { agent } : {}) } as Docker.DockerOptions);
      // A remote engine's own socket, seen from its host, is where its containers can mount it.
      this.hostSocket = IMAGE_CACHE.dockerSocket;
    }
    this.endpoint = found.description;
  }

  async ping(): Promise<void> {
    try {
      await this.client.ping();
    } catch (error) {
      const reason = error instanceof Error ? error.message.split('\n')[0] : String(error);
      throw new VindError(
        `Docker is not reachable at ${this.endpoint} (${reason}): start it with ` +
          '`sudo systemctl start docker` (or `sudo dockerd &`), or set DOCKER_HOST or a Docker context',
      );
    }
  }

  async dataDisk(): Promise<{ path: string; free: number } | undefined> {
    const info = (await this.client.info()) as { DockerRootDir?: string };
    if (!info.DockerRootDir) return undefined;
    // A remote engine's folder is not on this machine: then there is nothing to measure here.
    const stats = await statfs(info.DockerRootDir).catch(() => undefined);
    return stats ? { path: info.DockerRootDir, free: stats.bavail * stats.bsize } : undefined;
  }

  async containersRoutableFromHost(): Promise<boolean> {
    if (process.platform !== 'linux' || this.hostSocket === IMAGE_CACHE.dockerSocket) return false;
    const info = (await this.client.info()) as { OperatingSystem?: string; SecurityOptions?: string[] };
    if (info.OperatingSystem?.includes('Docker Desktop')) return false;
    return !(info.SecurityOptions ?? []).some((option) => option.includes('name=rootless'));
  }

  /**
   * Some hosts lack capabilities in the bounding set of every process (CAP_SYS_RESOURCE, for one),
   * and Docker refuses `--privileged` there. The answer is kept per engine in the cache folder,
   * because probing costs a container start.
   */
  async canRunPrivileged(probeImage: string): Promise<boolean> {
    const info = await this.client.info();
    const key = `${info.ID}|${info.ServerVersion}|${info.KernelVersion}`;
    const file = join(cacheDir(), 'docker-hosts.json');
    let known: Record<string, { privileged: boolean }> = {};
    try {
      known = JSON.parse(await readFile(file, 'utf8')) as typeof known;
    } catch {
      // no cache yet
    }
    const cached = known[key];
    if (cached) return cached.privileged;
    const container = await this.client.createContainer(privilegedProbeSpec(probeImage));
    let privileged = true;
    try {
      await container.start();
      await container.wait();
    } catch {
      privileged = false;
    } finally {
      await container.remove({ force: true }).catch(() => undefined);
    }
    known[key] = { privileged };
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, JSON.stringify(known, null, 2));
    return privileged;
  }

  // ---- images ----

  async inspectImage(reference: string): Promise<ImageInfo | undefined> {
    try {
      const image = await this.client.getImage(reference).inspect();
      return { id: image.Id, labels: image.Config?.Labels ?? {}, size: image.Size };
    } catch (error) {
      if (statusCode(error) === 404) return undefined;
      throw error;
    }
  }

  async removeImage(reference: string): Promise<void> {
    await idempotent(() => this.client.getImage(reference).remove({ noprune: false }));
  }

  async saveImages(references: string[]): Promise<Readable> {
    const modem = this.client.modem as unknown as {
      dial(options: object, callback: (error: Error | null, stream: Readable) => void): void;
    };
    return new Promise((resolve, reject) => {
      modem.dial(
        {
          path: '/images/get?',
          method: 'GET',
          options: { names: references },
          isStream: true,
          statusCodes: { 200: true, 404: 'no such image', 500: 'server error' },
        },
        (error, stream) => (error ? reject(error) : resolve(stream)),
      );
    });
  }

  /** Loads a docker-archive (`docker load`). */
  async loadImage(archive: Readable | Buffer): Promise<void> {
    const stream = Buffer.isBuffer(archive) ? Readable.from([archive]) : archive;
    await this.followProgress((await this.client.loadImage(stream)) as NodeJS.ReadableStream);
  }

  /** Streams a root file system tarball into a new image (the Engine API's `docker import`). */
  async importRootfs(rootfsTar: Readable, reference: string, changes: string[]): Promise<void> {
    const [repo, tag] = repositoryAndTag(reference);
    const progress = (await this.client.importImage(
      rootfsTar as unknown as string,
      { repo, tag, changes } as object,
    )) as NodeJS.ReadableStream;
    await this.followProgress(progress);
  }

  /**
   * Builds an image from a context stream. The tag is applied by the engine only when the whole
   * build succeeded, so a failed build leaves no half-tagged image.
   */
  async buildImage(
    context: Readable,
    options: { tag: string; labels: Record<string, string>; logFile: string },
  ): Promise<string> {
    await mkdir(dirname(options.logFile), { recursive: true });
    const log = createWriteStream(options.logFile, { flags: 'a' });
    const response = await this.client.buildImage(context as unknown as NodeJS.ReadableStream, {
      t: options.tag,
      labels: options.labels,
      rm: true,
      forcerm: true,
    });
    let imageId = '';
    try {
      await this.followProgress(response, (message) => {
        if (message.stream) log.write(message.stream);
        if (message.aux?.ID) imageId = message.aux.ID;
        if (message.error) log.write(`ERROR: ${message.errorDetail?.message ?? message.error}\n`);
      });
    } finally {
      await new Promise((resolve) => log.end(resolve));
    }
    return imageId;
  }

  async runToCompletion(options: {
    image: string;
    command: string[];
    tmpfs: string[];
    files?: Readable;
  }): Promise<{ container: string; exitCode: number; output: string }> {
    const name = `vind-image-seed-${randomBytes(6).toString('hex')}`;
    const container = await this.client.createContainer(seedContainerSpec({ name, ...options }));
    try {
      if (options.files) await container.putArchive(options.files, { path: '/' });
      await container.start();
      const ended = (await container.wait()) as { StatusCode: number };
      return { container: name, exitCode: ended.StatusCode, output: await this.logs(name) };
    } catch (error) {
      await this.removeContainer(name).catch(() => undefined);
      throw error;
    }
  }

  async commitContainer(container: string, tag: string, changes: string[]): Promise<string> {
    const [repo, version] = repositoryAndTag(tag);
    const committed = (await this.client
      .getContainer(container)
      .commit({ repo, tag: version, changes, pause: false })) as { Id: string };
    return committed.Id;
  }

  private async followProgress(progress: NodeJS.ReadableStream, onMessage?: (m: BuildMessage) => void) {
    let failure: string | undefined;
    await new Promise<void>((resolve, reject) => {
      this.client.modem.followProgress(
        progress,
        (error) => (error ? reject(error) : resolve()),
        (message: BuildMessage) => {
          onMessage?.(message);
          if (message.error) failure = message.errorDetail?.message ?? message.error;
        },
      );
    });
    if (failure) throw new Error(failure);
  }

  // ---- networks ----

  async createNetwork(request: NetworkRequest): Promise<void> {
    await this.client.createNetwork({
      Name: request.name,
      Driver: 'bridge',
      CheckDuplicate: true,
      Labels: request.labels,
      IPAM: {
        Driver: 'default',
        Config: [{ Subnet: request.subnet, Gateway: request.gateway, IPRange: request.ipRange }],
      },
      Options: { 'com.docker.network.bridge.enable_ip_masquerade': 'true' },
    });
  }

  async removeNetwork(name: string): Promise<void> {
    await idempotent(() => this.client.getNetwork(name).remove());
  }

  async listNetworks(labels?: LabelFilter): Promise<NetworkInfo[]> {
    const networks = await this.client.listNetworks(labels ? { filters: { label: labels } } : {});
    return networks.map((n) => ({
      id: n.Id,
      name: n.Name,
      labels: n.Labels ?? {},
      subnets: (n.IPAM?.Config ?? []).map((c) => c.Subnet ?? '').filter(Boolean),
    }));
  }

  async usedSubnets(): Promise<string[]> {
    return (await this.listNetworks()).flatMap((n) => n.subnets).filter((s) => s.includes('.'));
  }

  async connectNetwork(network: string, container: string): Promise<void> {
    try {
      await this.client.getNetwork(network).connect({ Container: container });
    } catch (error) {
      if (!/already exists/.test((error as Error).message)) throw error;
    }
  }

  async disconnectNetwork(network: string, container: string): Promise<void> {
    await idempotent(
      () => this.client.getNetwork(network).disconnect({ Container: container, Force: true }),
      /is not connected/,
    );
  }

  async hostAddressOn(name: string): Promise<string> {
    const network = await this.client.getNetwork(name).inspect();
    const ipv4 = (network.IPAM?.Config ?? []).find((c) => c.Subnet?.includes('.'));
    if (!ipv4?.Subnet) throw new VindError(`Docker network ${name} has no IPv4 subnet`);
    // The host interface behind the bridge: Docker's option, else its own naming rule.
    const bridge =
      network.Options?.['com.docker.network.bridge.name'] ??
      (network.Name === 'bridge' ? 'docker0' : `br-${network.Id.slice(0, 12)}`);
    const addresses = (networkInterfaces()[bridge] ?? [])
      .filter((a) => a.family === 'IPv4')
      .map((a) => a.address);
    return hostAddressOnBridge({ subnet: ipv4.Subnet, gateway: ipv4.Gateway, bridgeAddresses: addresses });
  }

  // ---- volumes ----

  async createVolume(name: string, labels: Record<string, string>): Promise<void> {
    await this.client.createVolume({ Name: name, Labels: labels });
  }

  async removeVolume(name: string): Promise<void> {
    await idempotent(() => this.client.getVolume(name).remove({ force: true }));
  }

  async listVolumes(labels: LabelFilter): Promise<VolumeInfo[]> {
    const result = await this.client.listVolumes({ filters: { label: labels } });
    return (result.Volumes ?? []).map((v) => ({ name: v.Name, labels: v.Labels ?? {} }));
  }

  // ---- containers ----

  async runNode(request: NodeRequest): Promise<void> {
    const spec = nodeContainerSpec(request);
    const volume = (spec.HostConfig?.Binds?.[0] ?? '').split(':')[0]!;
    // Docker hands back an existing volume of that name as if it were new: a node must never start
    // on the keys and data of another cluster's node.
    if (
      await this.client
        .getVolume(volume)
        .inspect()
        .then(
          () => true,
          () => false,
        )
    ) {
      throw new VindError(
        `volume ${volume} already exists: remove it (\`docker volume rm ${volume}\`) or choose another name`,
      );
    }
    await this.createVolume(volume, { [LABELS.cluster]: request.cluster, [LABELS.role]: request.role });
    const container = await this.client.createContainer(spec);
    if (request.files?.length) await container.putArchive(filesArchive(request.files), { path: '/' });
    await container.start();
  }

  async runImageCache(request: ImageCacheRequest): Promise<void> {
    await this.createVolume(IMAGE_CACHE.volume, { [LABELS.role]: 'image-cache' });
    await this.client.createContainer(imageCacheContainerSpec(request, this.hostSocket));
    // A create running at the same moment may have found it and started it already (304).
    await this.startContainer(IMAGE_CACHE.container);
  }

  async runHub(request: HubRequest): Promise<void> {
    await this.createVolume(varVolumeName(request.name), {
      [LABELS.cluster]: request.cluster,
      [LABELS.role]: 'hub',
    });
    const container = await this.client.createContainer(hubContainerSpec(request));
    if (request.files.length) await container.putArchive(filesArchive(request.files), { path: '/' });
    await container.start();
  }

  async runFrontDoor(request: FrontDoorRequest): Promise<void> {
    await this.client.createContainer(frontDoorContainerSpec(request));
    await this.startContainer(frontDoorName(request.cluster));
  }

  async startContainer(name: string): Promise<void> {
    try {
      await this.client.getContainer(name).start();
    } catch (error) {
      if (statusCode(error) !== 304) throw error; // already running
    }
  }

  async stopContainer(name: string, timeoutSeconds: number): Promise<void> {
    try {
      await this.client.getContainer(name).stop({ t: timeoutSeconds });
    } catch (error) {
      if (statusCode(error) !== 304) throw error; // already stopped
    }
  }

  async pauseContainer(name: string): Promise<void> {
    await idempotent(() => this.client.getContainer(name).pause(), /is already paused/);
  }

  async unpauseContainer(name: string): Promise<void> {
    await idempotent(() => this.client.getContainer(name).unpause(), /is not paused/);
  }

  async setRestartPolicy(name: string, policy: 'no' | 'unless-stopped'): Promise<void> {
    await this.client.getContainer(name).update({ RestartPolicy: { Name: policy, MaximumRetryCount: 0 } });
  }

  async removeContainer(name: string): Promise<void> {
    await idempotent(
      () => this.client.getContainer(name).remove({ force: true, v: true }),
      /already in progress/,
    );
  }

  async inspectContainer(name: string): Promise<ContainerInfo | undefined> {
    try {
      const info = await this.client.getContainer(name).inspect();
      return {
        id: info.Id,
        name: info.Name.replace(/^\//, ''),
        state: info.State.Status as ContainerState,
        exitCode: info.State.ExitCode,
        labels: info.Config.Labels ?? {},
        networks: Object.keys(info.NetworkSettings.Networks ?? {}),
        startedAt: info.State.StartedAt,
        image: info.Config.Image,
        addresses: Object.fromEntries(
          Object.entries(info.NetworkSettings.Networks ?? {}).map(([n, v]) => [n, v.IPAddress]),
        ),
        ports: Object.entries(info.NetworkSettings.Ports ?? {}).flatMap(([key, bindings]) =>
          (bindings ?? []).map((b) => ({
            containerPort: Number(key.split('/')[0]),
            protocol: key.split('/')[1] ?? 'tcp',
            hostIp: b.HostIp,
            hostPort: Number(b.HostPort),
          })),
        ),
      };
    } catch (error) {
      if (statusCode(error) === 404) return undefined;
      throw error;
    }
  }

  async inspectContainerJson(name: string): Promise<unknown> {
    try {
      return await this.client.getContainer(name).inspect();
    } catch (error) {
      if (statusCode(error) === 404) return undefined;
      throw error;
    }
  }

  async listContainers(labels: LabelFilter): Promise<ContainerInfo[]> {
    const containers = await this.client.listContainers({ all: true, filters: { label: labels } });
    return containers.map((c) => ({
      id: c.Id,
      name: (c.Names[0] ?? '').replace(/^\//, ''),
      state: c.State as ContainerState,
      exitCode: 0,
      labels: c.Labels ?? {},
      networks: Object.keys(c.NetworkSettings?.Networks ?? {}),
      image: c.Image,
    }));
  }

  /**
   * Runs a command in a running container and collects its output; with `input`, the stream becomes
   * the command's standard input (image imports, files written into a node).
   */
  async exec(container: string, command: string[], input?: Readable): Promise<ExecResult> {
    const exec = await this.client
      .getContainer(container)
      .exec({ Cmd: command, AttachStdin: input !== undefined, AttachStdout: true, AttachStderr: true });
    const stream = await exec.start({ hijack: true, stdin: input !== undefined });
    const stdout = new PassThrough();
    const stderr = new PassThrough();
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    stdout.on('data', (c: Buffer) => out.push(c));
    stderr.on('data', (c: Buffer) => err.push(c));
    this.client.modem.demuxStream(stream, stdout, stderr);
    const finished = new Promise<void>((resolve, reject) => {
      stream.on('end', resolve);
      stream.on('close', resolve);
      stream.on('error', reject);
    });
    // Ending the input half-closes the connection: the command sees end of file, its output still arrives.
    input?.pipe(stream as unknown as NodeJS.WritableStream);
    await finished;
    const info = await exec.inspect();
    return {
      exitCode: info.ExitCode ?? -1,
      stdout: Buffer.concat(out).toString('utf8'),
      stderr: Buffer.concat(err).toString('utf8'),
    };
  }

  async readFile(container: string, path: string): Promise<string | undefined> {
    const result = await this.exec(container, ['cat', path]);
    return result.exitCode === 0 ? result.stdout : undefined;
  }

  async *followFiles(container: string, paths: string[], options: FollowOptions): AsyncIterable<FileChange> {
    const exec = await this.client
      .getContainer(container)
      .exec({ Cmd: followCommand(paths, options), AttachStdout: true, AttachStderr: true });
    const stream = await exec.start({ hijack: true, stdin: false });
    const stdout = new PassThrough();
    this.client.modem.demuxStream(stream, stdout, new PassThrough().resume());
    const ended = () => stdout.end();
    stream.on('end', ended);
    stream.on('close', ended);
    stream.on('error', ended);
    options.signal?.addEventListener('abort', () => stream.destroy(), { once: true });
    if (options.signal?.aborted) stream.destroy();
    const parser = new FollowParser(paths);
    try {
      for await (const chunk of stdout) yield* parser.push((chunk as Buffer).toString('utf8'));
    } finally {
      // The loop inside ends by itself (an end marker, its time limit, the container's stop).
      stream.destroy();
    }
  }

  async writeFile(container: string, path: string, content: string): Promise<void> {
    const result = await this.exec(
      container,
      // A temporary name of this write's own: two writers at once (two creates sharing the image
      // cache) must not move each other's file away.
      ['sh', '-c', 'mkdir -p "$(dirname "$1")" && cat > "$1.tmp.$$" && mv "$1.tmp.$$" "$1"', 'sh', path],
      Readable.from([content]),
    );
    if (result.exitCode !== 0) {
      throw new VindError(`${container}: writing ${path} failed: ${result.stderr.trim()}`);
    }
  }

  async logs(container: string, tail?: number): Promise<string> {
    const buffer = (await this.client.getContainer(container).logs({
      stdout: true,
      stderr: true,
      follow: false,
      ...(tail === undefined ? {} : { tail }),
    })) as unknown as Buffer;
    return demuxBuffer(buffer);
  }
}

/** Files as a tar stream for the Engine's archive upload, owned by root, parents included. */
function filesArchive(files: ContainerFile[]): Readable {
  const pack = tar.pack();
  const folders = new Set<string>();
  for (const file of files) {
    const parts = file.path.replace(/^\//, '').split('/');
    for (let i = 1; i < parts.length; i++) folders.add(parts.slice(0, i).join('/'));
  }
  for (const folder of [...folders].sort())
    pack.entry({ name: folder, type: 'directory', mode: 0o755, uid: 0, gid: 0 });
  for (const file of files) {
    pack.entry({ name: file.path.replace(/^\//, ''), mode: file.mode, uid: 0, gid: 0 }, file.content);
  }
  pack.finalize();
  return pack as unknown as Readable;
}

/** Docker multiplexes stdout and stderr in 8-byte-framed chunks when no TTY is attached. */
export function demuxBuffer(buffer: Buffer): string {
  const parts: Buffer[] = [];
  let offset = 0;
  while (offset + 8 <= buffer.length) {
    const size = buffer.readUInt32BE(offset + 4);
    parts.push(buffer.subarray(offset + 8, offset + 8 + size));
    offset += 8 + size;
  }
  return Buffer.concat(parts).toString('utf8');
}

let shared: DockerRuntime | undefined;

/** The runtime of this process, discovered once. */
export function dockerRuntime(): DockerRuntime {
  shared ??= new DockerRuntime();
  return shared;
}
