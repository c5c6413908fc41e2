// The image cache: one container per Docker host, shared by every cluster. It is the only container
// that gets the Docker socket, and it is reachable only on the cluster networks it is attached to.
// It serves a request only with the token of a cluster: the CLI makes one per cluster, gives it to
// the cluster's workers and writes it into the cache; deleting the cluster removes it.

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { parseByteSize } from '../shared/byte-size.js';
import { AGENT_PATH, IMAGE_CACHE, imageCacheTokenFile, LABELS } from '../shared/contract.js';
import { VindError } from '../shared/errors.js';
import { dockerConfigDir, helperCredentials } from './registry-credentials.js';
import type { ContainerRuntime } from './runtime/runtime.js';

function statusCode(error: unknown): number | undefined {
  return (error as { statusCode?: number } | undefined)?.statusCode;
}

/** The user's Docker config folder (registry credentials), if there is one. */
function existingDockerConfigDir(): string | undefined {
  const dir = dockerConfigDir();
  return existsSync(dir) ? dir : undefined;
}

/**
 * Starts the cache if this host has none, and attaches it to every cluster network (not just the new
 * one: a cache removed by hand comes back for every cluster). A cache made anew gets back the tokens
 * of the clusters that are still there. Two creates at once settle on one cache.
 */
export async function ensureImageCache(
  runtime: ContainerRuntime,
  image: string,
  network: string,
): Promise<void> {
  let info = await runtime.inspectContainer(IMAGE_CACHE.container);
  let madeAnew = false;
  if (!info) {
    try {
      await runtime.runImageCache({ image, network, dockerConfigDir: existingDockerConfigDir() });
      madeAnew = true;
    } catch (error) {
      // Another create made it at the same moment: use that one.
      if (statusCode(error) !== 409) throw error;
    }
    info = await runtime.inspectContainer(IMAGE_CACHE.container);
    if (!info) throw new VindError('the image cache container vanished while it was being started');
  }
  if (info.state !== 'running') await runtime.startContainer(IMAGE_CACHE.container);
  const networks = await runtime.listNetworks([LABELS.cluster]);
  for (const name of new Set([network, ...networks.map((n) => n.name)])) {
    if (info.networks.includes(name)) continue;
    // A network being deleted by a concurrent `vind delete` may be gone already.
    await runtime.connectNetwork(name, IMAGE_CACHE.container).catch((error: Error) => {
      if (name === network) throw error;
    });
  }
  if (madeAnew) await restoreTokens(runtime);
  await shareHelperCredentials(runtime);
}

/** The tokens of the clusters that exist, read back from their workers, into a cache made anew. */
async function restoreTokens(runtime: ContainerRuntime): Promise<void> {
  const workers = await runtime.listContainers([LABELS.cluster, `${LABELS.role}=worker`]);
  const done = new Set<string>();
  for (const worker of workers) {
    const cluster = worker.labels[LABELS.cluster];
    if (!cluster || done.has(cluster) || worker.state !== 'running') continue;
    const result = await runtime
      .exec(worker.name, ['printenv', 'VIND_IMAGE_CACHE_TOKEN'])
      .catch(() => undefined);
    const token = result?.exitCode === 0 ? result.stdout.trim() : '';
    if (!/^[0-9a-f]{64}$/.test(token)) continue;
    await registerCacheToken(runtime, cluster, token);
    done.add(cluster);
  }
}

/** What the user's credential helpers hold, for the cache's pulls through the host (see registry-credentials.ts). */
export async function shareHelperCredentials(runtime: ContainerRuntime): Promise<void> {
  const credentials = await helperCredentials();
  await runtime.writeFile(IMAGE_CACHE.container, IMAGE_CACHE.helperCredentials, JSON.stringify(credentials));
}

export async function cacheRunning(runtime: ContainerRuntime): Promise<boolean> {
  return (await runtime.inspectContainer(IMAGE_CACHE.container))?.state === 'running';
}

/** Sets the size limit of the cache's blobs; eviction applies it at the next import. */
export async function setCacheLimit(runtime: ContainerRuntime, size: string): Promise<number> {
  let bytes: number;
  try {
    bytes = parseByteSize(size);
  } catch (error) {
    throw new VindError(`invalid cache limit: ${(error as Error).message}`);
  }
  if (bytes < 64 * 1024 * 1024) throw new VindError(`invalid cache limit "${size}": use 64MiB or more`);
  await runtime.writeFile(IMAGE_CACHE.container, IMAGE_CACHE.limitFile, `${bytes}\n`);
  return bytes;
}

/** A new cluster's token for the cache: 32 random bytes, hex. */
export function newCacheToken(): string {
  return randomBytes(32).toString('hex');
}

/** Lets a cluster's nodes in: its token, as a file of the tokens folder in the running cache. */
export async function registerCacheToken(
  runtime: ContainerRuntime,
  cluster: string,
  token: string,
): Promise<void> {
  await runtime.writeFile(IMAGE_CACHE.container, imageCacheTokenFile(cluster), `${token}\n`);
}

/** Takes a cluster's token back out of the cache, if the cache runs. */
export async function removeCacheToken(runtime: ContainerRuntime, cluster: string): Promise<void> {
  const info = await runtime.inspectContainer(IMAGE_CACHE.container);
  if (info?.state !== 'running') return;
  const result = await runtime.exec(IMAGE_CACHE.container, ['rm', '-f', imageCacheTokenFile(cluster)]);
  if (result.exitCode !== 0) {
    throw new VindError(`image cache: removing the token of "${cluster}" failed: ${result.stderr.trim()}`);
  }
}

/** Detaches the cache from a network that is about to be removed. */
export async function detachImageCache(runtime: ContainerRuntime, network: string): Promise<void> {
  await runtime.disconnectNetwork(network, IMAGE_CACHE.container).catch(() => undefined);
}

/** Removes the cache with the last cluster; its blobs stay in their volume when asked to keep them. */
export async function removeImageCache(runtime: ContainerRuntime, keepBlobs: boolean): Promise<void> {
  await runtime.removeContainer(IMAGE_CACHE.container);
  if (!keepBlobs) await runtime.removeVolume(IMAGE_CACHE.volume);
}

export interface CachedImage {
  reference: string;
  imageId: string;
  size: number;
  at: string;
}

/** `image-cache list` in the cache container: its images, the bytes its blobs take, and its limit. */
export interface CacheListing {
  images: CachedImage[];
  used: number;
  limit: number;
}

async function runInCache(runtime: ContainerRuntime, args: string[]): Promise<string> {
  const info = await runtime.inspectContainer(IMAGE_CACHE.container);
  if (info?.state !== 'running') {
    throw new VindError('no image cache is running: it starts with the first cluster (`vind create`)');
  }
  const result = await runtime.exec(IMAGE_CACHE.container, ['node', AGENT_PATH, 'image-cache', ...args]);
  if (result.exitCode !== 0) throw new VindError(`image cache: ${result.stderr.trim().split('\n').at(-1)}`);
  return result.stdout;
}

export async function listCachedImages(runtime: ContainerRuntime): Promise<CacheListing> {
  return JSON.parse(await runInCache(runtime, ['list'])) as CacheListing;
}

export async function pruneImageCache(runtime: ContainerRuntime): Promise<void> {
  await runInCache(runtime, ['prune']);
}
