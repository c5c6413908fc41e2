// The LoadBalancer controller, in the control plane's agent: it gives `type: LoadBalancer` Services
// an address from the cluster network's kept range (status.loadBalancer.ingress), picks one healthy
// worker to announce each address (the announcements ConfigMap, read by every worker), and, where
// the host cannot reach container addresses, asks the image cache to publish the ports on the Docker
// host's 127.0.0.1. It follows the cloud-controller contract: Kubernetes' own finalizer keeps a
// Service until its address is released, and Events say what happened and why a Service waits.
//
// Everything it decides is a function of the API's objects and of node health, so a restart
// reaches the same answer; the data path itself (address on a node, kube-proxy's rules) goes on
// without it.

import { request as httpRequest } from 'node:http';
import { writeFileAtomic } from '../../shared/atomic-write.js';
import {
  HOST_PORTS_LISTEN,
  HOST_PORTS_PATH,
  IMAGE_CACHE,
  LOAD_BALANCER,
  LOAD_BALANCER_STATE_FILE,
  type HostPortForward,
  type LoadBalancerState,
  type PortProtocol,
  type PublishedForward,
} from '../../shared/contract.js';
import {
  internalIp,
  isNodeReady,
  kubePatch,
  kubePost,
  type KubeNode,
  type KubeTarget,
  watchCollection,
} from '../../shared/kubernetes.js';
import { log } from '../log.js';
import { reconciler } from '../reconciler.js';
import {
  allocate,
  type AddressDemand,
  type AddressRange,
  type Allocation,
  type BalancedService,
  chooseAnnouncers,
  inRange,
  rangeText,
} from './allocate.js';

export interface KubeService {
  metadata: {
    name: string;
    namespace: string;
    uid: string;
    resourceVersion?: string;
    creationTimestamp: string;
    deletionTimestamp?: string;
    finalizers?: string[];
    annotations?: Record<string, string>;
  };
  spec: {
    type?: string;
    loadBalancerClass?: string;
    loadBalancerIP?: string;
    externalTrafficPolicy?: string;
    ports?: { name?: string; port: number; protocol?: string }[];
  };
  status?: { loadBalancer?: { ingress?: { ip?: string; hostname?: string }[] } };
}

interface EndpointSlice {
  metadata: { name: string; namespace: string; labels?: Record<string, string> };
  endpoints?: { nodeName?: string; conditions?: { ready?: boolean } }[];
}

/** Node label that keeps a node out of load balancing, as upstream's service controller reads it. */
const EXCLUDE_LABEL = 'node.kubernetes.io/exclude-from-external-load-balancers';
/** Health of the workers' kube-proxy: how often, how long to wait, how many misses mean down. */
const PROBE_INTERVAL_MS = 400;
const PROBE_TIMEOUT_MS = 350;
const PROBE_MISSES = 2;
const PUBLISH_RETRY_MS = 10_000;
const PLACEMENT_WAIT_MS = 2000;

export interface ControllerSettings {
  range: AddressRange;
  /** Publish ports on the Docker host through the image cache (its URL and this cluster's token). */
  hostPorts?: { cacheUrl: string; token: string };
  /** This node's name, for the Events' reporting instance. */
  instance: string;
}

/** Served by vind: type LoadBalancer, no class or vind's own, not being deleted. */
export function isServed(service: KubeService): boolean {
  const { spec, metadata } = service;
  return (
    spec.type === 'LoadBalancer' &&
    (spec.loadBalancerClass === undefined || spec.loadBalancerClass === LOAD_BALANCER.className) &&
    !metadata.deletionTimestamp
  );
}

function key(service: { metadata: { namespace: string; name: string } }): string {
  return `${service.metadata.namespace}/${service.metadata.name}`;
}

function currentAddress(service: KubeService): string | undefined {
  return service.status?.loadBalancer?.ingress?.[0]?.ip;
}

export function balancedService(service: KubeService): BalancedService {
  const requested =
    service.metadata.annotations?.[LOAD_BALANCER.addressAnnotation]?.trim() ||
    service.spec.loadBalancerIP?.trim() ||
    undefined;
  return {
    key: key(service),
    created: service.metadata.creationTimestamp,
    requested,
    current: currentAddress(service),
    ports: (service.spec.ports ?? []).map((p) => ({ port: p.port, protocol: p.protocol ?? 'TCP' })),
    local: service.spec.externalTrafficPolicy === 'Local',
  };
}

/** `80/TCP=127.0.0.1:49153,53/UDP=127.0.0.1:49154` for the ports of one Service. */
export function hostPortsText(
  service: KubeService,
  published: PublishedForward | undefined,
): string | undefined {
  if (!published) return undefined;
  const parts: string[] = [];
  for (const port of service.spec.ports ?? []) {
    const protocol = port.protocol ?? 'TCP';
    const found = published.ports.find((p) => p.port === port.port && p.protocol === protocol);
    if (found) parts.push(`${port.port}/${protocol}=${HOST_PORTS_LISTEN}:${found.hostPort}`);
  }
  return parts.length > 0 ? parts.join(',') : undefined;
}

/** The ports to publish per address: TCP and UDP ports of every Service on it. */
export function wantedForwards(
  services: KubeService[],
  allocations: Map<string, Allocation>,
): HostPortForward[] {
  const byAddress = new Map<string, Map<string, { port: number; protocol: PortProtocol }>>();
  for (const service of services) {
    const allocation = allocations.get(key(service));
    if (!allocation || !('address' in allocation)) continue;
    const ports = byAddress.get(allocation.address) ?? new Map();
    for (const port of service.spec.ports ?? []) {
      const protocol = port.protocol ?? 'TCP';
      if (protocol !== 'TCP' && protocol !== 'UDP') continue; // SCTP: Docker cannot publish it.
      ports.set(`${port.port}/${protocol}`, { port: port.port, protocol });
    }
    byAddress.set(allocation.address, ports);
  }
  return [...byAddress.entries()]
    .filter(([, ports]) => ports.size > 0)
    .map(([address, ports]) => ({
      address,
      ports: [...ports.values()].sort((a, b) => a.port - b.port || a.protocol.localeCompare(b.protocol)),
    }))
    .sort((a, b) => a.address.localeCompare(b.address));
}

/** GET /healthz of a worker's kube-proxy: 200 means its rules are in sync. */
function probe(address: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = httpRequest(
      { host: address, port: LOAD_BALANCER.nodeHealthPort, path: '/healthz', timeout: PROBE_TIMEOUT_MS },
      (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      },
    );
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

function putHostPorts(
  cacheUrl: string,
  token: string,
  forwards: HostPortForward[],
): Promise<PublishedForward[]> {
  const body = Buffer.from(JSON.stringify({ forwards }));
  const url = new URL(HOST_PORTS_PATH, cacheUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      {
        method: 'PUT',
        timeout: 60_000,
        headers: {
          'Content-Type': 'application/json',
          'Content-Length': body.length,
          [IMAGE_CACHE.tokenHeader]: token,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          if (res.statusCode !== 200) {
            reject(
              new Error(`the image cache refused to publish host ports: ${res.statusCode} ${text.trim()}`),
            );
            return;
          }
          try {
            resolve((JSON.parse(text) as { forwards: PublishedForward[] }).forwards);
          } catch {
            reject(new Error('the image cache answered host ports with something that is not JSON'));
          }
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () =>
      req.destroy(new Error('the image cache did not answer about host ports in 60 s')),
    );
    req.on('error', reject);
    req.end(body);
  });
}

export class LoadBalancerController {
  private services: KubeService[] = [];
  private nodes: KubeNode[] = [];
  private slices: EndpointSlice[] = [];
  private servicesSeen = false;
  private nodesSeen = false;
  private slicesSeen = false;
  /** Node name -> healthy; missing until the first probe answered or failed often enough. */
  private readonly health = new Map<string, boolean>();
  private readonly misses = new Map<string, number>();
  private announced = new Map<string, string>();
  private announcedWritten = false;
  /** Per Service uid: the last Event, so a Service that keeps waiting is not told again. */
  private readonly lastEvent = new Map<string, string>();
  private published: { wanted: string; forwards: PublishedForward[] } | undefined;
  private publishAgainAt = 0;
  /** When each address not announced yet was first wanted. */
  private readonly firstSeen = new Map<string, number>();
  /** Asks for a reconcile pass: one at a time, failures tried again a second later. */
  private readonly kick: () => void;
  private stateText = '';

  constructor(
    private readonly target: KubeTarget,
    private readonly settings: ControllerSettings,
    private readonly signal: AbortSignal,
  ) {
    this.kick = reconciler(() => this.reconcile(), { logPrefix: 'load balancer', retryMs: 1000, signal });
  }

  start(): void {
    const onError = (what: string) => (error: Error) =>
      log(`load balancer: watching ${what}: ${error.message.split('\n')[0]}`);
    watchCollection<KubeService>(
      this.target,
      '/api/v1/services',
      (items) => {
        this.services = items;
        this.servicesSeen = true;
        this.kick();
      },
      onError('services'),
      this.signal,
    );
    watchCollection<KubeNode>(
      this.target,
      '/api/v1/nodes',
      (items) => {
        this.nodes = items;
        this.nodesSeen = true;
        this.kick();
      },
      onError('nodes'),
      this.signal,
    );
    watchCollection<EndpointSlice & { metadata: { namespace: string } }>(
      this.target,
      '/apis/discovery.k8s.io/v1/endpointslices',
      (items) => {
        this.slices = items;
        this.slicesSeen = true;
        this.kick();
      },
      onError('endpoint slices'),
      this.signal,
    );
    void this.probeLoop();
  }

  private async probeLoop(): Promise<void> {
    while (!this.signal.aborted) {
      const started = Date.now();
      await Promise.all(
        this.nodes.map(async (node) => {
          const address = internalIp(node);
          const name = node.metadata.name;
          const ok = address ? await probe(address) : false;
          const misses = ok ? 0 : (this.misses.get(name) ?? 0) + 1;
          this.misses.set(name, misses);
          const healthy = ok || (misses < PROBE_MISSES && this.health.get(name) === true);
          if (this.health.get(name) !== healthy && (ok || misses >= PROBE_MISSES)) {
            this.health.set(name, healthy);
            log(`load balancer: node ${name} is ${healthy ? 'healthy' : 'not answering'}`);
            this.kick();
          }
        }),
      );
      for (const name of [...this.health.keys()]) {
        if (!this.nodes.some((n) => n.metadata.name === name)) this.health.delete(name);
      }
      await new Promise((resolve) =>
        setTimeout(resolve, Math.max(0, PROBE_INTERVAL_MS - (Date.now() - started))),
      );
    }
  }

  private async reconcile(): Promise<void> {
    if (!this.servicesSeen || !this.nodesSeen || !this.slicesSeen) return;
    const served = this.services.filter(isServed);
    const allocations = allocate(served.map(balancedService), this.settings.range);

    for (const service of served) {
      const allocation = allocations.get(key(service))!;
      await this.ensureFinalizer(service);
      await this.applyAllocation(service, allocation);
    }

    await this.announce(served, allocations);
    // Once the address is announced nowhere any more: Services that left vind's care.
    for (const service of this.services) {
      if (isServed(service)) continue;
      await this.release(service);
    }
    await this.writeState(allocations);
    // Last: a cache that does not answer holds up nothing else.
    if (this.settings.hostPorts) {
      await this.publish(served, allocations, this.settings.hostPorts);
      await this.writeState(allocations);
    }
  }

  private async ensureFinalizer(service: KubeService): Promise<void> {
    if (service.metadata.finalizers?.includes(LOAD_BALANCER.finalizer)) return;
    await kubePatch(
      this.target,
      `/api/v1/namespaces/${service.metadata.namespace}/services/${service.metadata.name}`,
      { metadata: { finalizers: [LOAD_BALANCER.finalizer] } },
      'strategic',
    );
  }

  private async applyAllocation(service: KubeService, allocation: Allocation): Promise<void> {
    const path = `/api/v1/namespaces/${service.metadata.namespace}/services/${service.metadata.name}/status`;
    const current = currentAddress(service);
    if ('address' in allocation) {
      const ingress = service.status?.loadBalancer?.ingress ?? [];
      if (ingress.length !== 1 || current !== allocation.address) {
        await kubePatch(
          this.target,
          path,
          { status: { loadBalancer: { ingress: [{ ip: allocation.address, ipMode: 'VIP' }] } } },
          'merge',
        );
        log(`load balancer: ${key(service)} has ${allocation.address}`);
        await this.event(service, 'Normal', 'IPAllocated', `Assigned address ${allocation.address}`);
      }
      return;
    }
    if (current) {
      await kubePatch(this.target, path, { status: { loadBalancer: { ingress: null } } }, 'merge');
    }
    await this.event(
      service,
      'Warning',
      allocation.reason === 'RangeFull' ? 'AllocationFailed' : 'AddressRefused',
      allocation.pending,
    );
  }

  private async announce(served: KubeService[], allocations: Map<string, Allocation>): Promise<void> {
    const demands = new Map<string, AddressDemand>();
    const sliced = new Set<string>();
    for (const service of served) {
      const allocation = allocations.get(key(service));
      if (!allocation || !('address' in allocation)) continue;
      const demand = demands.get(allocation.address) ?? {};
      const endpoints = this.readyEndpointNodes(service);
      if (service.spec.externalTrafficPolicy === 'Local') demand.localNodes = endpoints;
      demand.endpointNodes = new Set([...(demand.endpointNodes ?? []), ...endpoints]);
      demands.set(allocation.address, demand);
      if (this.hasSlice(service)) sliced.add(allocation.address);
    }
    // A new address waits for its endpoints to be known (a moment after the Service, and nothing
    // could answer before anyway), so it is placed on a node with one; at most PLACEMENT_WAIT_MS.
    const now = Date.now();
    for (const address of [...this.firstSeen.keys()])
      if (!demands.has(address)) this.firstSeen.delete(address);
    for (const address of demands.keys()) {
      if (this.announced.has(address) || sliced.has(address)) continue;
      const since = this.firstSeen.get(address) ?? now;
      this.firstSeen.set(address, since);
      if (now - since < PLACEMENT_WAIT_MS) {
        demands.delete(address);
        setTimeout(() => this.kick(), PLACEMENT_WAIT_MS - (now - since)).unref();
      }
    }
    const healthy = this.nodes
      .filter(
        (n) =>
          isNodeReady(n) &&
          this.health.get(n.metadata.name) === true &&
          n.metadata.labels?.[EXCLUDE_LABEL] === undefined,
      )
      .map((n) => n.metadata.name)
      .sort();
    const chosen = chooseAnnouncers(demands, healthy, this.announced);
    if (this.announcedWritten && sameMap(chosen, this.announced)) return;
    const { namespace, name } = LOAD_BALANCER.announcements;
    await kubePatch(
      this.target,
      `/api/v1/namespaces/${namespace}/configmaps/${name}`,
      {
        apiVersion: 'v1',
        kind: 'ConfigMap',
        metadata: { name, namespace },
        data: Object.fromEntries([...chosen.entries()].sort()),
      },
      'apply',
      LOAD_BALANCER.component,
    );
    for (const [address, node] of chosen) {
      if (this.announced.get(address) !== node) log(`load balancer: ${node} announces ${address}`);
    }
    for (const address of this.announced.keys()) {
      if (!chosen.has(address)) log(`load balancer: ${address} announced nowhere`);
    }
    this.announced = chosen;
    this.announcedWritten = true;
  }

  /** Read the announcements the last controller wrote, so a restart moves no address. */
  seedAnnouncements(data: Record<string, string> | undefined): void {
    this.announced = new Map(Object.entries(data ?? {}).filter(([a]) => inRange(this.settings.range, a)));
  }

  private hasSlice(service: KubeService): boolean {
    return this.slices.some(
      (slice) =>
        slice.metadata.namespace === service.metadata.namespace &&
        slice.metadata.labels?.['kubernetes.io/service-name'] === service.metadata.name,
    );
  }

  private readyEndpointNodes(service: KubeService): Set<string> {
    const nodes = new Set<string>();
    for (const slice of this.slices) {
      if (
        slice.metadata.namespace !== service.metadata.namespace ||
        slice.metadata.labels?.['kubernetes.io/service-name'] !== service.metadata.name
      ) {
        continue;
      }
      for (const endpoint of slice.endpoints ?? []) {
        if (endpoint.nodeName && endpoint.conditions?.ready !== false) nodes.add(endpoint.nodeName);
      }
    }
    return nodes;
  }

  private async publish(
    served: KubeService[],
    allocations: Map<string, Allocation>,
    cache: { cacheUrl: string; token: string },
  ): Promise<void> {
    const forwards = wantedForwards(served, allocations);
    const wanted = JSON.stringify(forwards);
    if (this.published?.wanted !== wanted) {
      if (Date.now() < this.publishAgainAt) return;
      try {
        const published = await putHostPorts(cache.cacheUrl, cache.token, forwards);
        this.published = { wanted, forwards: published };
        log(
          `load balancer: ${published.reduce((n, f) => n + f.ports.length, 0)} ports published on the host`,
        );
      } catch (error) {
        // Each try may cost the cache container starts: try again in a while, not at every change.
        log(`load balancer: ${(error as Error).message.split('\n')[0]}; trying again in 10 s`);
        this.publishAgainAt = Date.now() + PUBLISH_RETRY_MS;
        setTimeout(() => this.kick(), PUBLISH_RETRY_MS).unref();
        return;
      }
    }
    for (const service of served) {
      const allocation = allocations.get(key(service));
      const address = allocation && 'address' in allocation ? allocation.address : undefined;
      const text = hostPortsText(
        service,
        this.published.forwards.find((f) => f.address === address),
      );
      if (service.metadata.annotations?.[LOAD_BALANCER.hostPortsAnnotation] === text) continue;
      await kubePatch(
        this.target,
        `/api/v1/namespaces/${service.metadata.namespace}/services/${service.metadata.name}`,
        { metadata: { annotations: { [LOAD_BALANCER.hostPortsAnnotation]: text ?? null } } },
        'merge',
      );
    }
  }

  /** A Service vind no longer serves (deleted, another type or class): its address and finalizer go. */
  private async release(service: KubeService): Promise<void> {
    const path = `/api/v1/namespaces/${service.metadata.namespace}/services/${service.metadata.name}`;
    const ours = service.metadata.finalizers?.includes(LOAD_BALANCER.finalizer) ?? false;
    if (!ours) return;
    const current = currentAddress(service);
    if (!service.metadata.deletionTimestamp && current && service.spec.type !== 'LoadBalancer') {
      await kubePatch(
        this.target,
        `${path}/status`,
        { status: { loadBalancer: { ingress: null } } },
        'merge',
      );
    }
    const annotations = service.metadata.annotations?.[LOAD_BALANCER.hostPortsAnnotation]
      ? { annotations: { [LOAD_BALANCER.hostPortsAnnotation]: null } }
      : {};
    await kubePatch(
      this.target,
      path,
      { metadata: { ...annotations, '$deleteFromPrimitiveList/finalizers': [LOAD_BALANCER.finalizer] } },
      'strategic',
    ).catch((error: Error & { status?: number }) => {
      if (error.status !== 404) throw error;
    });
    if (current) log(`load balancer: ${key(service)} released ${current}`);
    this.lastEvent.delete(service.metadata.uid);
  }

  private async event(
    service: KubeService,
    type: 'Normal' | 'Warning',
    reason: string,
    message: string,
  ): Promise<void> {
    const said = `${reason}\n${message}`;
    if (this.lastEvent.get(service.metadata.uid) === said) return;
    const now = new Date().toISOString();
    await kubePost(this.target, `/api/v1/namespaces/${service.metadata.namespace}/events`, {
      metadata: { generateName: `${service.metadata.name}.`, namespace: service.metadata.namespace },
      involvedObject: {
        apiVersion: 'v1',
        kind: 'Service',
        namespace: service.metadata.namespace,
        name: service.metadata.name,
        uid: service.metadata.uid,
      },
      type,
      reason,
      message,
      source: { component: LOAD_BALANCER.component },
      reportingComponent: LOAD_BALANCER.component,
      reportingInstance: this.settings.instance,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    });
    this.lastEvent.set(service.metadata.uid, said);
  }

  /** For `vind list`: how many addresses are in use, and where ports are published on the host. */
  private async writeState(allocations: Map<string, Allocation>): Promise<void> {
    const addresses = new Set<string>();
    for (const allocation of allocations.values())
      if ('address' in allocation) addresses.add(allocation.address);
    const state: LoadBalancerState = {
      range: rangeText(this.settings.range),
      addresses: addresses.size,
      hostPorts: (this.published?.forwards ?? []).flatMap((f) =>
        f.ports.map((p) => ({
          address: f.address,
          port: p.port,
          protocol: p.protocol,
          hostPort: p.hostPort,
        })),
      ),
    };
    const text = `${JSON.stringify(state)}\n`;
    if (text === this.stateText) return;
    await writeFileAtomic(LOAD_BALANCER_STATE_FILE, text);
    this.stateText = text;
  }
}

function sameMap(a: Map<string, string>, b: Map<string, string>): boolean {
  return a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);
}
