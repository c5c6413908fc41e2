// Role `image-cache`: the registry the nodes of every cluster pull through, fed by the host's Docker.
// `image-cache list` and `image-cache prune` are run by the CLI with `docker exec`.

import { rm } from 'node:fs/promises';
import { log } from '../log.js';
import { setStatus } from '../status.js';
import { exportImage, inspectImage, pullImage, registryAuth } from './engine.js';
import { ImageCache, startRegistry } from './registry.js';

export const CACHE_ROOT = '/var/lib/vind-cache';
export const CACHE_PORT = 5000;
const DOCKER_CONFIG = '/etc/vind/docker-config.json';

function cache(): ImageCache {
  return new ImageCache(CACHE_ROOT, {
    inspect: inspectImage,
    export: exportImage,
    pull: async (reference, registry) => pullImage(reference, await registryAuth(registry, DOCKER_CONFIG)),
  });
}

export async function runImageCache(): Promise<void> {
  const command = process.argv[3];
  if (command === 'list') {
    process.stdout.write(`${JSON.stringify(await cache().list())}\n`);
    process.exit(0);
  }
  if (command === 'prune') {
    await rm(CACHE_ROOT, { recursive: true, force: true });
    process.stdout.write('pruned\n');
    process.exit(0);
  }
  const server = startRegistry(cache(), CACHE_PORT);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  log(`image cache listening on :${CACHE_PORT}`);
  await setStatus('ready', `image cache on :${CACHE_PORT}`);
}
