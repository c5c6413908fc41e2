// The image cache: one container per Docker host, shared by every cluster. It is the only container
// that gets the Docker socket, and it is reachable only on the cluster networks it is attached to.
// It serves a request only with the token of a cluster: the CLI makes one per cluster, gives it to
// the cluster's workers and writes it into the cache; deleting the cluster removes it.

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { AGENT_PATH, IMAGE_CACHE, imageCacheTokenFile } from '../shared/contract.js';
import { VindError } from '../shared/errors.js';
import type { ContainerRuntime } from './runtime/runtime.js';

function statusCode(error: unknown): number | undefined {
  return (error as { statusCode?: number } | undefined)?.statusCode;
}

/** The user's Docker config (registry credentials), if there is one. */
function dockerConfigPath(): string | undefined {
  const dir = process.env.DOCKER_CONFIG ?? join(homedir(), '.docker');
  const file = join(dir, 'config.json');
  return existsSync(file) ? file : undefined;
}

/** Starts the cache if this host has none, and attaches it to a cluster network. */
export async function ensureImageCache(
  runtime: ContainerRuntime,
  image: string,
  network: string,
): Promise<void> {
  let info = await runtime.inspectContainer(IMAGE_CACHE.container);
  if (!info) {
    try {
      await runtime.runImageCache({ image, network, dockerConfig: dockerConfigPath() });
      return;
    } catch (error) {
      // Another create started it at the same moment: use that one.
      if (statusCode(error) !== 409) throw error;
      info = await runtime.inspectContainer(IMAGE_CACHE.container);
      if (!info) throw error;
    }
  }
  if (info.state !== 'running') await runtime.startContainer(IMAGE_CACHE.container);
  if (!info.networks.includes(network)) await runtime.connectNetwork(network, IMAGE_CACHE.container);
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
