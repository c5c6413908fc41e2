// Every node at once: the control plane and the workers. Workers bring up containerd and their
// preloaded images while the control plane boots, and join as soon as it hands out the join
// information. The front door (the API port) and, if this host has none yet, the image cache start
// while the control plane boots. The cluster's token for the image cache is made here: the workers
// get it in their settings, the cache once it runs.

import {
  API_SERVER_PORT,
  controlPlaneName,
  DATASTORE_URL_FILE,
  encodeFrontDoorEnv,
  encodeNodeEnv,
  frontDoorName,
  IMAGE_CACHE_URL,
  LABELS,
  networkName,
  varVolumeName,
  workerName,
} from '../../../shared/contract.js';
import { redactUrl } from '../../../shared/datastore.js';
import { clusterNames } from '../../clusters.js';
import {
  detachImageCache,
  ensureImageCache,
  newCacheToken,
  registerCacheToken,
  setCacheLimit,
  removeCacheToken,
  removeImageCache,
} from '../../image-cache.js';
import { formatSleepAfter } from '../../duration.js';
import type { FrontDoorRequest, NodeRequest } from '../../runtime/runtime.js';
import { allSettledOrThrow, type Step } from '../pipeline.js';
import { type CreateState, need } from '../state.js';

export function nodeRequests(state: CreateState, cacheToken: string): NodeRequest[] {
  const { config } = state;
  const plan = need(state.plan, 'the address plan');
  const apiPort = need(state.apiPort, 'the API server port');
  const common = {
    cluster: config.name,
    image: config.image,
    securityMode: need(state.securityMode, 'the security mode'),
    network: networkName(config.name),
  };
  const subnets = { podSubnet: config.podSubnet, serviceSubnet: config.serviceSubnet, cni: config.cni };
  const cache = { imageCache: IMAGE_CACHE_URL, imageCacheToken: cacheToken };
  const { range } = config.loadBalancer;
  const controlPlane: NodeRequest = {
    ...common,
    name: controlPlaneName(config.name),
    role: 'control-plane',
    address: plan.controlPlane,
    env: encodeNodeEnv({
      role: 'control-plane',
      nodeName: controlPlaneName(config.name),
      nodeIp: plan.controlPlane,
      ...subnets,
      datastore: config.datastore.kind === 'sqlite' ? 'sqlite' : 'external',
      podSecurity: config.podSecurity,
      clusterName: config.name,
      reuseDatastore: config.reuseDatastore,
      ...(state.publishHostPorts ? cache : {}),
      loadBalancer: {
        ...plan.loadBalancerRange(range.first, range.last),
        hostPorts: need(state.publishHostPorts, 'whether to publish host ports'),
      },
      storage: config.storage,
    }),
    files:
      config.datastore.kind === 'sqlite'
        ? []
        : [{ path: DATASTORE_URL_FILE, content: config.datastore.url, mode: 0o600 }],
    // The API server's host port is the front door's.
    ports: config.controlPlane.extraPortMappings,
    labels: {
      [LABELS.kubernetesVersion]: config.kubernetesVersion,
      [LABELS.apiPort]: String(apiPort),
      [LABELS.cni]: config.cni,
      ...(config.datastore.kind === 'sqlite' ? {} : { [LABELS.datastore]: redactUrl(config.datastore.url) }),
    },
  };
  const workers = config.workers.map((spec, index): NodeRequest => ({
    ...common,
    name: workerName(config.name, index),
    role: 'worker',
    address: plan.worker(index),
    env: encodeNodeEnv({
      role: 'worker',
      nodeName: workerName(config.name, index),
      nodeIp: plan.worker(index),
      ...subnets,
      labels: spec.labels,
      ...cache,
      join: { kind: 'file' },
    }),
    ports: spec.extraPortMappings,
    labels: { [LABELS.kubernetesVersion]: config.kubernetesVersion },
  }));
  return [controlPlane, ...workers];
}

/** The front door holds the API port on the host's 127.0.0.1 and wakes the cluster on demand. */
export function frontDoorRequest(state: CreateState, cacheToken: string): FrontDoorRequest {
  const { config } = state;
  const plan = need(state.plan, 'the address plan');
  return {
    cluster: config.name,
    image: config.image,
    network: networkName(config.name),
    port: {
      containerPort: API_SERVER_PORT,
      hostPort: need(state.apiPort, 'the API server port'),
      listenAddress: '127.0.0.1',
      protocol: 'TCP',
    },
    env: encodeFrontDoorEnv({
      cluster: config.name,
      upstream: { host: plan.controlPlane, port: API_SERVER_PORT },
      imageCache: IMAGE_CACHE_URL,
      imageCacheToken: cacheToken,
      sleepAfterMs: config.sleepAfterMs,
    }),
    labels: config.sleepAfterMs > 0 ? { [LABELS.sleepAfter]: formatSleepAfter(config.sleepAfterMs) } : {},
  };
}

export const startContainers: Step<CreateState> = {
  name: (state) => `start ${state.config.workers.length + 1} containers`,
  async run(state, { undo }) {
    const { runtime, config } = state;
    const network = networkName(config.name);
    undo(async () => {
      await detachImageCache(runtime, network);
      if ((await clusterNames(runtime)).every((other) => other === config.name)) {
        await removeImageCache(runtime, false);
      }
    });
    const token = newCacheToken();
    state.cacheToken = token;
    // Taken back before the cache itself, which stays for the other clusters.
    undo(() => removeCacheToken(runtime, config.name));
    const requests = nodeRequests(state, token);
    for (const request of requests) {
      // Registered before the start: a half-made node (its volume only) is taken back too.
      undo(async () => {
        await runtime.removeContainer(request.name);
        // Only a volume this cluster made: one of that name that was there before is not ours.
        const volume = varVolumeName(request.name);
        const ours = await runtime.listVolumes([`${LABELS.cluster}=${config.name}`]);
        if (ours.some((v) => v.name === volume)) await runtime.removeVolume(volume);
      });
    }
    undo(() => runtime.removeContainer(frontDoorName(config.name)));
    // Runs first: what a later step started in the background is made before it is taken back.
    undo(async () => {
      await state.sideContainers?.catch(() => undefined);
    });
    await allSettledOrThrow(requests.map((request) => runtime.runNode(request)));
  },
};

/**
 * The front door (the API port) and the image cache: neither is used before the control plane is
 * ready (every image a new cluster runs is preloaded), so they start after the nodes, not with them.
 * Their undo was registered with the nodes'.
 */
export function startSideContainers(state: CreateState): Promise<void> {
  const { runtime, config } = state;
  const token = need(state.cacheToken, 'the image cache token');
  return allSettledOrThrow([
    ensureImageCache(runtime, config.image, networkName(config.name)).then(async () => {
      await registerCacheToken(runtime, config.name, token);
      if (config.imageCacheLimit) await setCacheLimit(runtime, config.imageCacheLimit);
    }),
    runtime.runFrontDoor(frontDoorRequest(state, token)),
  ]);
}

export const openApiPort: Step<CreateState> = {
  name: 'open the API port',
  async run(state) {
    await need(state.sideContainers, 'the front door and image cache start');
  },
};
