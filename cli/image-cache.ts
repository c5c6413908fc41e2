// The image cache: one container per Docker host, shared by every cluster. It is the only container
// that gets the Docker socket, and it is reachable only on the cluster networks it is attached to.

import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import {
  createVolume,
  docker,
  execInContainer,
  inspectContainer,
  LABEL_ROLE,
  LABEL_VERSION,
  removeContainer,
  removeVolume,
} from './docker.js';
import { VindError } from '../shared/errors.js';
import { VIND_VERSION } from './version.js';

export const CACHE_CONTAINER = 'vind-image-cache';
export const CACHE_VOLUME = 'vind-image-cache';
export const CACHE_URL = `http://${CACHE_CONTAINER}:5000`;
const CACHE_ROLE = 'image-cache';

function statusCode(error: unknown): number | undefined {
  return (error as { statusCode?: number } | undefined)?.statusCode;
}

/** The Docker socket of this host, as the cache container must mount it. */
export function dockerSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  const host = env.DOCKER_HOST;
  if (host?.startsWith('unix://')) return host.slice('unix://'.length);
  return '/var/run/docker.sock';
}

function dockerConfigPath(): string | undefined {
  const dir = process.env.DOCKER_CONFIG ?? join(homedir(), '.docker');
  const file = join(dir, 'config.json');
  return existsSync(file) ? file : undefined;
}

async function createCacheContainer(image: string, network: string): Promise<void> {
  await createVolume(CACHE_VOLUME, { [LABEL_ROLE]: CACHE_ROLE });
  const config = dockerConfigPath();
  const container = await docker().createContainer({
    name: CACHE_CONTAINER,
    Image: image,
    Cmd: [CACHE_ROLE],
    Labels: { [LABEL_ROLE]: CACHE_ROLE, [LABEL_VERSION]: VIND_VERSION },
    HostConfig: {
      Binds: [
        `${dockerSocketPath()}:/var/run/docker.sock`,
        `${CACHE_VOLUME}:/var/lib/vind-cache`,
        // Registry credentials for pulls through the host, read-only.
        ...(config ? [`${config}:/etc/vind/docker-config.json:ro`] : []),
      ],
      RestartPolicy: { Name: 'unless-stopped', MaximumRetryCount: 0 },
      NetworkMode: network,
    },
  });
  await container.start();
}

/** Starts the cache if this host has none, and attaches it to a cluster network. */
export async function ensureImageCache(image: string, network: string): Promise<void> {
  let info = await inspectContainer(CACHE_CONTAINER);
  if (!info) {
    try {
      await createCacheContainer(image, network);
      return;
    } catch (error) {
      // Another create started it at the same moment: use that one.
      if (statusCode(error) !== 409) throw error;
      info = await inspectContainer(CACHE_CONTAINER);
      if (!info) throw error;
    }
  }
  if (!info.State.Running) await docker().getContainer(CACHE_CONTAINER).start();
  if (!info.NetworkSettings.Networks[network]) {
    try {
      await docker().getNetwork(network).connect({ Container: CACHE_CONTAINER });
    } catch (error) {
      if (!/already exists/.test((error as Error).message)) throw error;
    }
  }
}

/** Detaches the cache from a network that is about to be removed. */
export async function detachImageCache(network: string): Promise<void> {
  try {
    await docker().getNetwork(network).disconnect({ Container: CACHE_CONTAINER, Force: true });
  } catch {
    // not attached, or no cache
  }
}

/** Removes the cache with the last cluster; its blobs stay in their volume when asked to keep them. */
export async function removeImageCache(keepBlobs: boolean): Promise<void> {
  await removeContainer(CACHE_CONTAINER);
  if (!keepBlobs) await removeVolume(CACHE_VOLUME);
}

export interface CachedImage {
  reference: string;
  imageId: string;
  size: number;
  at: string;
}

async function runInCache(args: string[]): Promise<string> {
  const info = await inspectContainer(CACHE_CONTAINER);
  if (!info?.State.Running) {
    throw new VindError('no image cache is running: it starts with the first cluster (`vind create`)');
  }
  const result = await execInContainer(CACHE_CONTAINER, [
    'node',
    '/opt/vind/node-agent.mjs',
    CACHE_ROLE,
    ...args,
  ]);
  if (result.exitCode !== 0) throw new VindError(`image cache: ${result.stderr.trim().split('\n').at(-1)}`);
  return result.stdout;
}

export async function listCachedImages(): Promise<CachedImage[]> {
  return JSON.parse(await runInCache(['list'])) as CachedImage[];
}

export async function pruneImageCache(): Promise<void> {
  await runInCache(['prune']);
}
