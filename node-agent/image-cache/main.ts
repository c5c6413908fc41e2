// Role `image-cache`: the registry the nodes of every cluster pull through, fed by the host's Docker.
// `image-cache list` and `image-cache prune` are run by the CLI with `docker exec`.

import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { IMAGE_CACHE } from '../../shared/contract.js';
import { log } from '../log.js';
import { setStatus } from '../status.js';
import { exportImage, inspectImage, pullImage, registryAuth } from './engine.js';
import { ImageCache, startRegistry } from './registry.js';

const CACHE_ROOT = IMAGE_CACHE.root;
const CACHE_PORT = IMAGE_CACHE.port;
const DOCKER_CONFIG = IMAGE_CACHE.dockerConfig;

function cache(): ImageCache {
  return new ImageCache(CACHE_ROOT, {
    inspect: inspectImage,
    export: exportImage,
    pull: async (reference, registry) => pullImage(reference, await registryAuth(registry, DOCKER_CONFIG)),
  });
}

/** `image-cache list` and `image-cache prune`: one-shot commands next to the running server. */
export async function imageCacheCommand(command: string): Promise<void> {
  if (command === 'list') {
    process.stdout.write(`${JSON.stringify(await cache().list())}\n`);
  } else if (command === 'prune') {
    // The folder is a volume's mount point: empty it, keep it.
    const entries = await readdir(CACHE_ROOT).catch(() => [] as string[]);
    await Promise.all(entries.map((entry) => rm(join(CACHE_ROOT, entry), { recursive: true, force: true })));
  } else {
    throw new Error(`unknown image-cache command "${command}": use list or prune`);
  }
}

export async function runImageCache(): Promise<void> {
  const server = startRegistry(cache(), CACHE_PORT);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  log(`image cache listening on :${CACHE_PORT}`);
  await setStatus('ready', `image cache on :${CACHE_PORT}`);
}
