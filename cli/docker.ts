// The one module that talks to Docker. Everything vind creates carries dev.vind.* labels, and
// Docker itself is the record of what exists: list, delete and cleanup find objects by label.

import { createWriteStream } from 'node:fs';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { networkInterfaces } from 'node:os';
import { dirname, join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import Docker from 'dockerode';
import tar from 'tar-stream';
import { VindError } from '../shared/errors.js';
import { cacheDir } from './paths.js';
import { hostAddressOnBridge } from '../shared/subnets.js';

export const LABEL_CLUSTER = 'dev.vind.cluster';
export const LABEL_ROLE = 'dev.vind.role';
export const LABEL_VERSION = 'dev.vind.version';
export const LABEL_INPUTS_HASH = 'dev.vind.inputs-hash';
export const LABEL_KUBERNETES_VERSION = 'dev.vind.kubernetes-version';

let client: Docker | undefined;

export function docker(): Docker {
  client ??= new Docker();
  return client;
}

function dockerHostDescription(): string {
  return process.env.DOCKER_HOST ?? 'unix:///var/run/docker.sock';
}

/** Fails with one line that says how to start Docker when the engine does not answer. */
export async function ensureDockerReachable(): Promise<void> {
  try {
    await docker().ping();
  } catch (error) {
    const reason = error instanceof Error ? error.message.split('\n')[0] : String(error);
    throw new VindError(
      `Docker is not reachable at ${dockerHostDescription()} (${reason}): start it with ` +
        '`sudo systemctl start docker` (or `sudo dockerd &`), or set DOCKER_HOST',
    );
  }
}

function statusCode(error: unknown): number | undefined {
  return (error as { statusCode?: number } | undefined)?.statusCode;
}

export async function inspectImage(reference: string): Promise<Docker.ImageInspectInfo | undefined> {
  try {
    return await docker().getImage(reference).inspect();
  } catch (error) {
    if (statusCode(error) === 404) return undefined;
    throw error;
  }
}

export async function removeImage(reference: string): Promise<void> {
  try {
    await docker().getImage(reference).remove({ noprune: false });
  } catch (error) {
    if (statusCode(error) !== 404) throw error;
  }
}

/** Streams a root file system tarball into a new image (the Engine API's form of `docker import`). */
export async function importRootfs(rootfsTar: Readable, reference: string, changes: string[]): Promise<void> {
  const [repo, tag] = splitReference(reference);
  const progress = (await docker().importImage(
    rootfsTar as unknown as string,
    {
      repo,
      tag,
      changes,
    } as object,
  )) as NodeJS.ReadableStream;
  await followProgress(progress);
}

async function followProgress(progress: NodeJS.ReadableStream, onMessage?: (m: BuildMessage) => void) {
  let failure: string | undefined;
  await new Promise<void>((resolve, reject) => {
    docker().modem.followProgress(
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

export function splitReference(reference: string): [string, string] {
  const slash = reference.lastIndexOf('/');
  const colon = reference.lastIndexOf(':');
  if (colon > slash) return [reference.slice(0, colon), reference.slice(colon + 1)];
  return [reference, 'latest'];
}

/** Packs a folder as a build context; file modes are kept, owners are reset to root. */
export async function packDirectory(directory: string, files: string[]): Promise<Readable> {
  const pack = tar.pack();
  (async () => {
    for (const file of files) {
      const info = await stat(join(directory, file));
      const content = await readFile(join(directory, file));
      await new Promise<void>((resolve, reject) =>
        pack.entry(
          { name: file, mode: info.mode & 0o7777, uid: 0, gid: 0, size: content.length },
          content,
          (err) => (err ? reject(err) : resolve()),
        ),
      );
    }
    pack.finalize();
  })().catch((error: unknown) => pack.destroy(error as Error));
  return pack as unknown as Readable;
}

interface BuildMessage {
  stream?: string;
  error?: string;
  errorDetail?: { message?: string };
  aux?: { ID?: string };
}

/**
 * Builds an image from a context stream. The tag is applied by the engine only when the whole
 * build succeeded, so a failed build leaves no half-tagged image.
 */
export async function buildImage(
  context: Readable,
  options: { tag: string; labels: Record<string, string>; logFile: string },
): Promise<string> {
  await mkdir(dirname(options.logFile), { recursive: true });
  const log = createWriteStream(options.logFile, { flags: 'a' });
  const response = await docker().buildImage(context as unknown as NodeJS.ReadableStream, {
    t: options.tag,
    labels: options.labels,
    rm: true,
    forcerm: true,
  });
  let imageId = '';
  try {
    await followProgress(response, (message) => {
      if (message.stream) log.write(message.stream);
      if (message.aux?.ID) imageId = message.aux.ID;
      if (message.error) log.write(`ERROR: ${message.errorDetail?.message ?? message.error}\n`);
    });
  } finally {
    await new Promise((resolve) => log.end(resolve));
  }
  return imageId;
}

export async function removeContainer(idOrName: string): Promise<void> {
  try {
    await docker().getContainer(idOrName).remove({ force: true, v: true });
  } catch (error) {
    if (statusCode(error) !== 404) throw error;
  }
}

export async function listContainers(labels: string[]): Promise<Docker.ContainerInfo[]> {
  return docker().listContainers({ all: true, filters: { label: labels } });
}

export async function listVolumes(labels: string[]): Promise<Docker.VolumeInspectInfo[]> {
  const result = await docker().listVolumes({ filters: { label: labels } });
  return result.Volumes ?? [];
}

export async function removeVolume(name: string): Promise<void> {
  try {
    await docker().getVolume(name).remove({ force: true });
  } catch (error) {
    if (statusCode(error) !== 404) throw error;
  }
}

export async function createVolume(name: string, labels: Record<string, string>): Promise<void> {
  await docker().createVolume({ Name: name, Labels: labels });
}

export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command in a running container and collects its output; with `input`, the stream becomes the
 * command's standard input (image imports, files written into a node).
 */
export async function execInContainer(
  container: string,
  command: string[],
  input?: Readable,
): Promise<ExecResult> {
  const exec = await docker()
    .getContainer(container)
    .exec({ Cmd: command, AttachStdin: input !== undefined, AttachStdout: true, AttachStderr: true });
  const stream = await exec.start({ hijack: true, stdin: input !== undefined });
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  stdout.on('data', (c: Buffer) => out.push(c));
  stderr.on('data', (c: Buffer) => err.push(c));
  docker().modem.demuxStream(stream, stdout, stderr);
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

export async function containerLogs(container: string, tail = 50): Promise<string> {
  const buffer = (await docker()
    .getContainer(container)
    .logs({ stdout: true, stderr: true, tail, follow: false })) as unknown as Buffer;
  return demuxBuffer(buffer);
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

interface HostCapabilities {
  privileged: boolean;
}

/**
 * Whether this Docker host can run privileged containers. Some hosts lack capabilities in the
 * bounding set of every process (CAP_SYS_RESOURCE, for one), and Docker refuses `--privileged`
 * there; nodes then run with every capability the host has instead. The answer is kept per
 * daemon in the cache folder, because probing costs a container start.
 */
export async function probeHostCapabilities(probeImage: string): Promise<HostCapabilities> {
  const info = await docker().info();
  const key = `${info.ID}|${info.ServerVersion}|${info.KernelVersion}`;
  const file = join(cacheDir(), 'docker-hosts.json');
  let known: Record<string, HostCapabilities> = {};
  try {
    known = JSON.parse(await readFile(file, 'utf8')) as Record<string, HostCapabilities>;
  } catch {
    // no cache yet
  }
  const cached = known[key];
  if (cached) return cached;

  const container = await docker().createContainer({
    Image: probeImage,
    Entrypoint: ['/bin/true'],
    Labels: { [LABEL_ROLE]: 'probe' },
    HostConfig: { Privileged: true, AutoRemove: false },
  });
  let privileged = true;
  try {
    await container.start();
    await container.wait();
  } catch {
    privileged = false;
  } finally {
    await container.remove({ force: true }).catch(() => undefined);
  }
  const result = { privileged };
  known[key] = result;
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, JSON.stringify(known, null, 2));
  return result;
}

export interface NetworkSpec {
  name: string;
  subnet: string;
  gateway: string;
  ipRange: string;
  labels: Record<string, string>;
}

export async function createNetwork(spec: NetworkSpec): Promise<void> {
  await docker().createNetwork({
    Name: spec.name,
    Driver: 'bridge',
    CheckDuplicate: true,
    Labels: spec.labels,
    IPAM: {
      Driver: 'default',
      Config: [{ Subnet: spec.subnet, Gateway: spec.gateway, IPRange: spec.ipRange }],
    },
    Options: { 'com.docker.network.bridge.enable_ip_masquerade': 'true' },
  });
}

export async function removeNetwork(name: string): Promise<void> {
  try {
    await docker().getNetwork(name).remove();
  } catch (error) {
    if (statusCode(error) !== 404) throw error;
  }
}

/** Every IPv4 subnet that a Docker network on this engine uses. */
export async function usedSubnets(): Promise<string[]> {
  const networks = await docker().listNetworks();
  return networks
    .flatMap((n) => (n.IPAM?.Config ?? []).map((c) => c.Subnet ?? ''))
    .filter((s) => s.includes('.'));
}

export async function listNetworks(labels: string[]): Promise<Docker.NetworkInspectInfo[]> {
  return docker().listNetworks({ filters: { label: labels } });
}

export async function networkExists(name: string): Promise<boolean> {
  try {
    await docker().getNetwork(name).inspect();
    return true;
  } catch (error) {
    if (statusCode(error) === 404) return false;
    throw error;
  }
}

export async function inspectContainer(name: string): Promise<Docker.ContainerInspectInfo | undefined> {
  try {
    return await docker().getContainer(name).inspect();
  } catch (error) {
    if (statusCode(error) === 404) return undefined;
    throw error;
  }
}

/** Reads a small file out of a running container. */
export async function readContainerFile(container: string, path: string): Promise<string | undefined> {
  const result = await execInContainer(container, ['cat', path]);
  return result.exitCode === 0 ? result.stdout : undefined;
}

/** `docker save` of one or more images, as a tar stream. */
export async function saveImages(references: string[]): Promise<Readable> {
  const modem = docker().modem as unknown as {
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

/** Name of the host interface behind a bridge network: Docker's option, else its own naming rule. */
function bridgeInterface(network: Docker.NetworkInspectInfo): string {
  const named = network.Options?.['com.docker.network.bridge.name'];
  if (named) return named;
  return network.Name === 'bridge' ? 'docker0' : `br-${network.Id.slice(0, 12)}`;
}

/** The host's address on a bridge network (see `hostAddressOnBridge` for why this is not just the gateway). */
export async function hostAddressOnNetwork(name: string): Promise<string> {
  const network = await docker().getNetwork(name).inspect();
  const ipv4 = (network.IPAM?.Config ?? []).find((c) => c.Subnet?.includes('.'));
  if (!ipv4?.Subnet) throw new VindError(`Docker network ${name} has no IPv4 subnet`);
  const addresses = (networkInterfaces()[bridgeInterface(network)] ?? [])
    .filter((a) => a.family === 'IPv4')
    .map((a) => a.address);
  return hostAddressOnBridge({ subnet: ipv4.Subnet, gateway: ipv4.Gateway, bridgeAddresses: addresses });
}
