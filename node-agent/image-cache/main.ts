// Role `image-cache`: the registry the nodes of every cluster pull through, fed by the host's Docker.
// `image-cache list` and `image-cache prune` are run by the CLI with `docker exec`.

import { readdir, rm } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { IMAGE_CACHE } from '../../shared/contract.js';
import { parseImageReference } from '../../shared/image-reference.js';
import { log } from '../log.js';
import { setStatus } from '../status.js';
import { exportImage, inspectImage, pullImage, registryAuth } from './engine.js';
import { ImageCache, startRegistry } from './registry.js';

const CACHE_ROOT = IMAGE_CACHE.root;
const CACHE_PORT = IMAGE_CACHE.port;
const DOCKER_CONFIG = IMAGE_CACHE.dockerConfig;
/** What the CLI writes into the cache folder: it survives a prune. */
const CLI_FILES = [basename(IMAGE_CACHE.tokens), basename(IMAGE_CACHE.limitFile)];

function cache(): ImageCache {
  return new ImageCache(CACHE_ROOT, {
    inspect: inspectImage,
    export: exportImage,
    pull: async (reference) =>
      pullImage(reference, await registryAuth(parseImageReference(reference).registry, DOCKER_CONFIG)),
  });
}

/** `image-cache list` and `image-cache prune`: one-shot commands next to the running server. */
export async function imageCacheCommand(command: string): Promise<void> {
  if (command === 'list') {
    process.stdout.write(`${JSON.stringify(await cache().list())}\n`);
  } else if (command === 'prune') {
    // The folder is a volume's mount point: empty it, keep it, and keep the tokens and the limit.
    const entries = await readdir(CACHE_ROOT).catch(() => [] as string[]);
    await Promise.all(
      entries
        .filter((entry) => !CLI_FILES.includes(entry))
        .map((entry) => rm(join(CACHE_ROOT, entry), { recursive: true, force: true })),
    );
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
