// Before anything is made: the engine answers, the name is free, the node image is there, the host
// ports are free, and how node containers can run on this engine (privileged or capabilities).

import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { LABELS, networkName, nodeImage, parseNodeStatus, STATUS_FILE } from '../../../shared/contract.js';
import { VindError } from '../../../shared/errors.js';
import type { ContainerRuntime, SecurityMode } from '../../runtime/runtime.js';
import type { Step } from '../pipeline.js';
import type { CreateState } from '../state.js';

async function portIsFree(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, host, () => server.close(() => resolve(true)));
  });
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * inotify instances are counted per user across the host, and every node container runs as root.
 * Measured: a control plane holds about 13, an idle worker 9, growing with its pods; 24 per worker
 * leaves room for workloads. The default limit of 128 runs out at about five workers.
 */
export function inotifyWarning(limit: number, workers: number): string | undefined {
  const needed = 16 + 24 * workers;
  if (needed <= limit) return undefined;
  return (
    `fs.inotify.max_user_instances is ${limit}, low for ${workers} workers (about ${needed} needed); nodes ` +
    'may fail with "too many open files": raise it with `sudo sysctl fs.inotify.max_user_instances=1024`'
  );
}

/** The kubelets evict pods when their disk (the engine's) has less than 2 GiB free. */
export function lowDiskWarning(path: string, free: number): string | undefined {
  const GiB = 1024 ** 3;
  if (free >= 4 * GiB) return undefined;
  return (
    `the disk holding Docker's data (${path}) has ${(free / GiB).toFixed(1)} GiB free: nodes evict pods when ` +
    'less than 2 GiB is left; free some space, e.g. with `docker system prune`'
  );
}

async function inotifyLimit(): Promise<number | undefined> {
  try {
    return Number((await readFile('/proc/sys/fs/inotify/max_user_instances', 'utf8')).trim());
  } catch {
    return undefined; // not a Linux host: Docker runs in a VM whose limits are not visible from here
  }
}

/** Privileged when the engine allows it, else the capability-based mode; VIND_NODE_SECURITY overrides. */
export async function nodeSecurityMode(runtime: ContainerRuntime, image: string): Promise<SecurityMode> {
  const forced = process.env.VIND_NODE_SECURITY;
  if (forced === 'privileged' || forced === 'capabilities') return forced;
  return (await runtime.canRunPrivileged(image)) ? 'privileged' : 'capabilities';
}

/**
 * A name in use is refused: a whole cluster ("already exists"), or what an interrupted create left
 * (a create killed with SIGKILL cannot clean up after itself): its containers, volumes or network.
 * Volumes in particular are never taken over, or a new cluster would start with old keys and data.
 */
async function refuseExisting(runtime: ContainerRuntime, name: string): Promise<void> {
  const filter = [`${LABELS.cluster}=${name}`];
  const containers = await runtime.listContainers(filter);
  const volumes = await runtime.listVolumes(filter);
  const network = (await runtime.listNetworks()).some((n) => n.name === networkName(name));
  if (containers.length === 0 && volumes.length === 0 && !network) return;
  const controlPlane = containers.find((c) => c.labels[LABELS.role] === 'control-plane');
  const ready =
    controlPlane?.state === 'running' &&
    parseNodeStatus(await runtime.readFile(controlPlane.name, STATUS_FILE).catch(() => undefined))?.phase ===
      'ready';
  if (ready) {
    throw new VindError(
      `cluster "${name}" already exists: delete it with \`vind delete ${name}\` or choose another name`,
    );
  }
  const parts = [
    containers.length > 0 ? `${containers.length} container${containers.length > 1 ? 's' : ''}` : '',
    volumes.length > 0 ? `${volumes.length} volume${volumes.length > 1 ? 's' : ''}` : '',
    network ? 'its network' : '',
  ].filter(Boolean);
  throw new VindError(
    `cluster "${name}" has remains of an earlier create that did not finish (${parts.join(', ')}): ` +
      `remove them with \`vind delete ${name}\``,
  );
}

export const checkHost: Step<CreateState> = {
  name: 'check host',
  async run(state, { note, warn }) {
    const { config, runtime } = state;
    await runtime.ping();
    await refuseExisting(runtime, config.name);
    if (!(await runtime.inspectImage(config.image))) {
      throw new VindError(
        config.image === nodeImage(config.kubernetesVersion)
          ? `node image ${config.image} is not built: build it with \`vind image build --kubernetes-version ${config.kubernetesVersion}\``
          : `node image ${config.image} is not in Docker: give an image \`vind image build\` made, or leave out --image`,
      );
    }
    const apiPort = config.apiServerPort || (await freePort());
    const hostPorts = [
      { hostPort: apiPort, listenAddress: '127.0.0.1', what: 'the API server' },
      ...[config.controlPlane, ...config.workers].flatMap((n) =>
        n.extraPortMappings.map((m) => ({ ...m, what: `port mapping ${m.hostPort}:${m.containerPort}` })),
      ),
    ];
    for (const p of hostPorts) {
      if (!(await portIsFree(p.hostPort, p.listenAddress))) {
        throw new VindError(
          `host port ${p.listenAddress}:${p.hostPort} for ${p.what} is already in use: choose another port`,
        );
      }
    }
    const disk = await runtime.dataDisk();
    const diskWarning = disk ? lowDiskWarning(disk.path, disk.free) : undefined;
    if (diskWarning) warn(diskWarning);
    const limit = await inotifyLimit();
    const warning = limit === undefined ? undefined : inotifyWarning(limit, config.workers.length);
    if (warning) warn(warning);
    state.securityMode = await nodeSecurityMode(runtime, config.image);
    state.apiPort = apiPort;
    const mode = config.loadBalancer.hostPorts;
    state.publishHostPorts =
      mode === 'always' || (mode === 'auto' && !(await runtime.containersRoutableFromHost()));
    note(
      state.securityMode === 'privileged' ? 'privileged nodes' : 'nodes with capabilities, not privileged',
    );
  },
};
