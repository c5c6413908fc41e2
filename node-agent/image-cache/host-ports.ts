// Publishing LoadBalancer ports on the Docker host's 127.0.0.1, on behalf of the engine broker: one
// forwarder container per LoadBalancer address (host-port-spec.ts), made to match the whole set a
// cluster asks for. Missing forwarders are made, changed ones replaced, the rest of that cluster's
// removed; nothing of another cluster, and nothing but forwarders, is touched. One reconcile per
// cluster at a time, so two quick requests do not race.

import { hostname } from 'node:os';
import {
  HOST_PORTS_LISTEN,
  type HostPortForward,
  LABELS,
  networkName,
  type PublishedForward,
} from '../../shared/contract.js';
import { type Cidr, contains, formatCidr, ipToInt, parseCidr } from '../../shared/subnets.js';
import type { ContainerCreateBody, ContainerDetails, ContainerSummary, NetworkDetails } from './engine.js';
import {
  dockerPortKey,
  HostPortError,
  hostPortContainerName,
  hostPortContainerSpec,
} from './host-port-spec.js';

/** What publishing host ports asks of Docker. */
export interface HostPortEngine {
  inspectNetwork(name: string): Promise<NetworkDetails | undefined>;
  /** Every container, running or not, with all of these labels. */
  listContainers(labels: Record<string, string>): Promise<ContainerSummary[]>;
  inspectContainer(id: string): Promise<ContainerDetails | undefined>;
  /** Answers the new container's id. */
  createContainer(name: string, body: ContainerCreateBody): Promise<string>;
  startContainer(id: string): Promise<void>;
  /** Forced: a running container goes too. */
  removeContainer(id: string): Promise<void>;
}

/** How many Docker calls of one reconcile run at once. */
const PARALLEL = 8;

/** The host numbers of a cluster network that LoadBalancer addresses take. */
const LOAD_BALANCER_HOSTS = { first: 128, last: 254 } as const;

/** The image this container runs (its id), read from Docker: the hostname is the container id's prefix. */
export async function ownImage(engine: HostPortEngine, id = hostname()): Promise<string> {
  const self = await engine.inspectContainer(id);
  if (!self?.Image) {
    throw new Error(`the image cache cannot find its own container "${id}" in Docker to learn its image`);
  }
  return self.Image;
}

/** The cluster network's IPv4 subnet; a 400 when the network does not exist. */
async function clusterSubnet(engine: HostPortEngine, cluster: string): Promise<Cidr> {
  const name = networkName(cluster);
  const network = await engine.inspectNetwork(name);
  if (!network) throw new HostPortError(400, `the network ${name} of cluster ${cluster} does not exist`);
  const subnet = (network.IPAM?.Config ?? []).find((c) => c.Subnet?.includes('.'))?.Subnet;
  if (!subnet) throw new HostPortError(400, `the network ${name} has no IPv4 subnet`);
  return parseCidr(subnet);
}

/** Refuses an address outside the network or outside its LoadBalancer host numbers (128-254). */
export function checkLoadBalancerAddress(subnet: Cidr, address: string, network: string): void {
  const host = ipToInt(address) - subnet.network;
  const { first, last } = LOAD_BALANCER_HOSTS;
  if (!contains(subnet, address) || host < first || host > last) {
    throw new HostPortError(
      400,
      `${address} is not a LoadBalancer address of ${network} (${formatCidr(subnet)}, host numbers ${first}-${last})`,
    );
  }
}

const nameOf = (container: { Names?: string[]; Name?: string }) =>
  (container.Name ?? container.Names?.[0] ?? '').replace(/^\//, '');

/** Whether a forwarder runs what the spec asks: the same image and the same address and ports. */
function matches(container: ContainerDetails, spec: ContainerCreateBody): boolean {
  return (
    container.Image === spec.Image &&
    JSON.stringify(container.Config.Cmd ?? []) === JSON.stringify(spec.Cmd) &&
    container.Config.Labels?.[LABELS.loadBalancerAddress] === spec.Labels[LABELS.loadBalancerAddress]
  );
}

/** Each port of a forward with the host port Docker published it on. */
function published(forward: HostPortForward, container: ContainerDetails): PublishedForward {
  return {
    address: forward.address,
    ports: forward.ports.map((port) => {
      const bindings = container.NetworkSettings?.Ports?.[dockerPortKey(port)] ?? [];
      const binding = bindings.find((b) => b.HostIp === HOST_PORTS_LISTEN) ?? bindings[0];
      const hostPort = Number(binding?.HostPort);
      if (!Number.isInteger(hostPort) || hostPort < 1 || hostPort > 65535) {
        throw new Error(`no host port for ${port.port}/${port.protocol}`);
      }
      return { ...port, hostPort };
    }),
  };
}

/** Runs `work` on every item, a few at a time; every item is tried, then the first failure is thrown. */
async function eachOf<T, R>(items: T[], work: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = [];
  const failures: unknown[] = [];
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const at = next++;
      try {
        results[at] = await work(items[at]!);
      } catch (error) {
        failures.push(error);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, items.length) }, worker));
  if (failures.length > 0) throw failures[0];
  return results;
}

export interface Reconciled {
  forwards: PublishedForward[];
  /** What was done, one entry per container: `created vind-dev-lb-...`; empty when all was in place. */
  changes: string[];
}

/**
 * Makes a cluster's forwarders match `forwards` (already checked by `checkForwards`), running
 * `image`, and answers where each port was published. An address outside the cluster network's
 * LoadBalancer range, or a cluster without a network, is refused before anything is made.
 */
export async function reconcileHostPorts(
  engine: HostPortEngine,
  image: string,
  cluster: string,
  forwards: HostPortForward[],
): Promise<Reconciled> {
  const subnet = await clusterSubnet(engine, cluster);
  for (const forward of forwards) checkLoadBalancerAddress(subnet, forward.address, networkName(cluster));
  const mine = { [LABELS.cluster]: cluster, [LABELS.role]: 'host-port' };
  // Checked again here: a filter Docker did not apply must not cost another cluster its containers.
  const existing = (await engine.listContainers(mine)).filter(
    (c) => c.Labels?.[LABELS.cluster] === cluster && c.Labels?.[LABELS.role] === 'host-port',
  );
  const wanted = new Map(forwards.map((f) => [hostPortContainerName(cluster, f.address), f]));
  const changes: string[] = [];
  await eachOf(
    existing.filter((c) => !wanted.has(nameOf(c))),
    async (container) => {
      await engine.removeContainer(container.Id);
      changes.push(`removed ${nameOf(container)}`);
    },
  );
  const byName = new Map(existing.map((c) => [nameOf(c), c]));
  const answer = await eachOf(forwards, async (forward) => {
    const name = hostPortContainerName(cluster, forward.address);
    try {
      const spec = hostPortContainerSpec(cluster, forward, image);
      const container = await ensureForwarder(engine, name, spec, byName.get(name), changes);
      return published(forward, container);
    } catch (error) {
      throw new Error(`${name}: ${(error as Error).message}`, { cause: error });
    }
  });
  return { forwards: answer, changes };
}

/** One forwarder as `spec` says, running: the one found if it matches, else a new one in its place. */
async function ensureForwarder(
  engine: HostPortEngine,
  name: string,
  spec: ContainerCreateBody,
  found: ContainerSummary | undefined,
  changes: string[],
): Promise<ContainerDetails> {
  let container = found && (await engine.inspectContainer(found.Id));
  if (container && !matches(container, spec)) {
    await engine.removeContainer(container.Id);
    container = undefined;
    changes.push(`replaced ${name}`);
  } else if (!container) {
    changes.push(`created ${name}`);
  }
  if (!container) {
    const id = await engine.createContainer(name, spec);
    await engine.startContainer(id);
    container = await engine.inspectContainer(id);
  } else if (!container.State?.Running) {
    await engine.startContainer(container.Id);
    container = await engine.inspectContainer(container.Id);
    changes.push(`started ${name}`);
  }
  if (!container) throw new Error('it is gone right after it started');
  return container;
}

/** Reconciles one cluster at a time, each with the image of the cache's own container. */
export class HostPorts {
  private readonly queues = new Map<string, Promise<unknown>>();
  private image?: Promise<string>;

  constructor(
    private readonly engine: HostPortEngine,
    private readonly findImage: () => Promise<string> = () => ownImage(engine),
    private readonly report: (cluster: string, changes: string[]) => void = () => undefined,
  ) {}

  publish(cluster: string, forwards: HostPortForward[]): Promise<PublishedForward[]> {
    const run = (this.queues.get(cluster) ?? Promise.resolve()).then(async () => {
      const { forwards: answer, changes } = await reconcileHostPorts(
        this.engine,
        await this.ownImage(),
        cluster,
        forwards,
      );
      if (changes.length > 0) this.report(cluster, changes);
      return answer;
    });
    const settled = run.then(
      () => undefined,
      () => undefined,
    );
    this.queues.set(cluster, settled);
    void settled.then(() => {
      if (this.queues.get(cluster) === settled) this.queues.delete(cluster);
    });
    return run;
  }

  /** Learnt once; asked again after a failure. */
  private ownImage(): Promise<string> {
    this.image ??= this.findImage().catch((error: unknown) => {
      this.image = undefined;
      throw error;
    });
    return this.image;
  }
}
