// Role `image-cache`: the registry the nodes of every cluster pull through, fed by the host's Docker.
// Two processes: this one (root) closes the Docker socket and config to other users, runs the
// engine broker, and starts the registry (role `image-cache-registry`) as an unprivileged user
// under the supervisor. `image-cache list` and `image-cache prune` are run by the CLI with
// `docker exec`.

import { existsSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { basename, join } from 'node:path';
import { AGENT_PATH, IMAGE_CACHE } from '../../shared/contract.js';
import { poll } from '../../shared/poll.js';
import { log } from '../log.js';
import { setStatus } from '../status.js';
import type { Supervisor } from '../supervisor.js';
import { brokerHostPorts, brokerPower, brokerSource, hostEngine, startBroker } from './broker.js';
import { BROKER_SOCKET, closeToOthers, giveTo, REGISTRY_USER } from './isolation.js';
import { ImageCache, startRegistry } from './registry.js';

const CACHE_ROOT = IMAGE_CACHE.root;
const CACHE_PORT = IMAGE_CACHE.port;
/** What the CLI writes into the cache folder: it survives a prune and stays root's. */
const CLI_FILES = [basename(IMAGE_CACHE.tokens), basename(IMAGE_CACHE.limitFile)];

function cache(): ImageCache {
  return new ImageCache(CACHE_ROOT, brokerSource(BROKER_SOCKET), {
    hostPorts: brokerHostPorts(BROKER_SOCKET),
    power: brokerPower(BROKER_SOCKET),
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

function listening(port: number): Promise<boolean | undefined> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(undefined));
  });
}

export async function runImageCache(supervisor: Supervisor): Promise<void> {
  if (existsSync(IMAGE_CACHE.engineDir)) await closeToOthers(IMAGE_CACHE.engineDir);
  await mkdir(CACHE_ROOT, { recursive: true });
  await giveTo(CACHE_ROOT, REGISTRY_USER, CLI_FILES);
  await startBroker(BROKER_SOCKET, hostEngine(), { gid: REGISTRY_USER.gid });
  log(`engine broker listening on ${BROKER_SOCKET}`);
  supervisor.start({
    name: 'image-cache-registry',
    command: process.execPath,
    args: [AGENT_PATH, 'image-cache-registry'],
    uid: REGISTRY_USER.uid,
    gid: REGISTRY_USER.gid,
    echo: true,
  });
  await poll('the registry to listen', () => listening(CACHE_PORT), { timeoutMs: 30_000, intervalMs: 100 });
  await setStatus('ready', `image cache on :${CACHE_PORT}`);
}

/** Role `image-cache-registry`: the registry itself, started by `image-cache` as REGISTRY_USER. */
export async function runImageCacheRegistry(): Promise<void> {
  if (process.getuid?.() === 0) {
    throw new Error('the registry does not run as root: the image-cache role starts it as its own user');
  }
  const server = startRegistry(cache(), CACHE_PORT);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  log(`image cache registry listening on :${CACHE_PORT} as uid ${process.getuid?.()}`);
}
