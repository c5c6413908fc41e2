// LoadBalancer ports published on the Docker host through the image cache: what a request may ask,
// the forwarder container, the reconcile against a fake engine, the broker's operation and the
// registry's endpoint, and which cluster a token belongs to.

import { runtimeSleepEngine } from '../../cli/sleep.js';
import { FakeRuntime } from '../support/fake-runtime.js';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  brokerHostPorts,
  brokerRequest,
  type Engine,
  hostEngine,
  startBroker,
} from '../../node-agent/image-cache/broker.js';
import type {
  ContainerCreateBody,
  ContainerDetails,
  NetworkDetails,
} from '../../node-agent/image-cache/engine.js';
import {
  checkClusterName,
  checkForwards,
  HostPortError,
  hostPortCommand,
  hostPortContainerName,
  hostPortContainerSpec,
  parseHostPortBody,
} from '../../node-agent/image-cache/host-port-spec.js';
import {
  type HostPortEngine,
  HostPorts,
  ownImage,
  reconcileHostPorts,
} from '../../node-agent/image-cache/host-ports.js';
import { type HostPortPublisher, ImageCache, startRegistry } from '../../node-agent/image-cache/registry.js';
import { TokenStore } from '../../node-agent/image-cache/tokens.js';
import {
  HOST_PORTS_PATH,
  type HostPortForward,
  IMAGE_CACHE,
  LABELS,
  type PublishedForward,
  VIND_VERSION,
} from '../../shared/contract.js';

const IMAGE = `sha256:${'c'.repeat(64)}`;
const OLD_IMAGE = `sha256:${'0'.repeat(64)}`;

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'vind-host-ports-'));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

const web = (address: string, ...ports: [number, 'TCP' | 'UDP'][]): HostPortForward => ({
  address,
  ports: ports.map(([port, protocol]) => ({ port, protocol })),
});

describe('a host-port request', () => {
  const body = (value: unknown) => JSON.stringify(value);
  const forwards = (...items: unknown[]) => body({ forwards: items });
  const tcp80 = [{ port: 80, protocol: 'TCP' }];

  it('takes the whole set, an empty one too, with exactly the known fields', () => {
    expect(parseHostPortBody(forwards())).toEqual([]);
    expect(
      parseHostPortBody(
        forwards(
          { address: '172.30.0.128', ports: tcp80 },
          {
            address: '172.30.0.129',
            ports: [
              { port: 53, protocol: 'UDP' },
              { port: 53, protocol: 'TCP' },
            ],
          },
        ),
      ),
    ).toEqual([web('172.30.0.128', [80, 'TCP']), web('172.30.0.129', [53, 'UDP'], [53, 'TCP'])]);
  });

  const many = (n: number, make: (i: number) => unknown) => Array.from({ length: n }, (_, i) => make(i));

  it.each([
    ['not JSON', '{forwards: []}', 'the body is not JSON: send {"forwards": [...]}'],
    ['a list', '[]', 'the body is not an object with forwards'],
    [
      'another field',
      body({ forwards: [], all: true }),
      'the body has an unknown field "all": it takes forwards',
    ],
    ['no forwards', body({}), 'forwards is not a list'],
    ['forwards not a list', body({ forwards: {} }), 'forwards is not a list'],
    [
      'too many addresses',
      forwards(...many(128, (i) => ({ address: `10.0.${i >> 8}.${i & 255}`, ports: tcp80 }))),
      'forwards lists 128 addresses: use at most 127',
    ],
    ['a forward not an object', forwards('172.30.0.128'), 'forwards[0] is not an object with address, ports'],
    [
      'a forward with another field',
      forwards({ address: '172.30.0.128', ports: tcp80, name: 'web' }),
      'forwards[0] has an unknown field "name": it takes address, ports',
    ],
    [
      'a name for an address',
      forwards({ address: 'web.local', ports: tcp80 }),
      'forwards[0].address "web.local" is not a dotted IPv4 address',
    ],
    [
      'an octet over 255',
      forwards({ address: '172.30.0.256', ports: tcp80 }),
      'forwards[0].address "172.30.0.256" is not a dotted IPv4 address',
    ],
    [
      'a leading zero',
      forwards({ address: '172.30.0.0128', ports: tcp80 }),
      'forwards[0].address "172.30.0.0128" is not a dotted IPv4 address',
    ],
    [
      'an IPv6 address',
      forwards({ address: 'fd00::80', ports: tcp80 }),
      'forwards[0].address "fd00::80" is not a dotted IPv4 address',
    ],
    ['no address', forwards({ ports: tcp80 }), 'forwards[0].address undefined is not a dotted IPv4 address'],
    [
      'an address twice',
      forwards({ address: '172.30.0.128', ports: tcp80 }, { address: '172.30.0.128', ports: tcp80 }),
      'forwards[1].address 172.30.0.128 is listed twice',
    ],
    [
      'no ports',
      forwards({ address: '172.30.0.128', ports: [] }),
      'forwards[0].ports lists 0 ports: use 1 to 64',
    ],
    [
      'too many ports',
      forwards({ address: '172.30.0.128', ports: many(65, (i) => ({ port: 1000 + i, protocol: 'TCP' })) }),
      'forwards[0].ports lists 65 ports: use 1 to 64',
    ],
    ['ports not a list', forwards({ address: '172.30.0.128', ports: 80 }), 'forwards[0].ports is not a list'],
    [
      'a port not an object',
      forwards({ address: '172.30.0.128', ports: ['80/TCP'] }),
      'forwards[0].ports[0] is not an object with port, protocol',
    ],
    [
      'a port with another field',
      forwards({ address: '172.30.0.128', ports: [{ port: 80, protocol: 'TCP', nodePort: 30080 }] }),
      'forwards[0].ports[0] has an unknown field "nodePort": it takes port, protocol',
    ],
    [
      'port 0',
      forwards({ address: '172.30.0.128', ports: [{ port: 0, protocol: 'TCP' }] }),
      'forwards[0].ports[0].port 0 is not a port: use an integer from 1 to 65535',
    ],
    [
      'port 65536',
      forwards({ address: '172.30.0.128', ports: [{ port: 65536, protocol: 'TCP' }] }),
      'forwards[0].ports[0].port 65536 is not a port: use an integer from 1 to 65535',
    ],
    [
      'a fractional port',
      forwards({ address: '172.30.0.128', ports: [{ port: 80.5, protocol: 'TCP' }] }),
      'forwards[0].ports[0].port 80.5 is not a port: use an integer from 1 to 65535',
    ],
    [
      'a port as text',
      forwards({ address: '172.30.0.128', ports: [{ port: '80', protocol: 'TCP' }] }),
      'forwards[0].ports[0].port "80" is not a port: use an integer from 1 to 65535',
    ],
    [
      'SCTP',
      forwards({ address: '172.30.0.128', ports: [{ port: 80, protocol: 'SCTP' }] }),
      'forwards[0].ports[0].protocol "SCTP" is not TCP or UDP',
    ],
    [
      'a protocol in lower case',
      forwards({ address: '172.30.0.128', ports: [{ port: 80, protocol: 'tcp' }] }),
      'forwards[0].ports[0].protocol "tcp" is not TCP or UDP',
    ],
    [
      'a port and protocol twice',
      forwards({
        address: '172.30.0.128',
        ports: [
          { port: 80, protocol: 'TCP' },
          { port: 80, protocol: 'UDP' },
          { port: 80, protocol: 'TCP' },
        ],
      }),
      'forwards[0].ports[2]: 80/TCP is listed twice for 172.30.0.128',
    ],
  ])('refuses %s', (_what, text, message) => {
    let error: unknown;
    try {
      parseHostPortBody(text);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(HostPortError);
    expect((error as HostPortError).status).toBe(400);
    expect((error as Error).message).toBe(message);
  });

  it('shows a long value cut short, on one line', () => {
    expect(() => checkForwards([{ address: `a\n${'b'.repeat(100)}`, ports: tcp80 }])).toThrow(
      `forwards[0].address "a\\n${'b'.repeat(36)}... is not a dotted IPv4 address`,
    );
  });

  it('takes a cluster name as the CLI allows it', () => {
    expect(checkClusterName('dev-1')).toBe('dev-1');
    for (const name of ['', 'Dev', '-dev', 'dev-', 'dev.x', 'a/b', '..', 'd'.repeat(33)]) {
      expect(() => checkClusterName(name)).toThrow(/invalid cluster name .*: a DNS label of at most 32/);
    }
    expect(checkClusterName('d'.repeat(32))).toBe('d'.repeat(32));
  });
});

describe('the forwarder container', () => {
  it('runs the cache image unprivileged, publishing each port on 127.0.0.1 at a port Docker picks', () => {
    const spec = hostPortContainerSpec(
      'dev',
      web('172.30.0.130', [80, 'TCP'], [53, 'UDP'], [53, 'TCP']),
      IMAGE,
    );
    expect(spec).toEqual({
      Image: IMAGE,
      Cmd: ['host-port', '172.30.0.130', '53/TCP', '53/UDP', '80/TCP'],
      User: '65534:65534',
      Labels: {
        [LABELS.cluster]: 'dev',
        [LABELS.role]: 'host-port',
        [LABELS.loadBalancerAddress]: '172.30.0.130',
        [LABELS.version]: VIND_VERSION,
      },
      ExposedPorts: { '80/tcp': {}, '53/udp': {}, '53/tcp': {} },
      HostConfig: {
        PortBindings: {
          '80/tcp': [{ HostIp: '127.0.0.1', HostPort: '' }],
          '53/udp': [{ HostIp: '127.0.0.1', HostPort: '' }],
          '53/tcp': [{ HostIp: '127.0.0.1', HostPort: '' }],
        },
        NetworkMode: 'vind-dev',
        RestartPolicy: { Name: 'unless-stopped', MaximumRetryCount: 0 },
        CapDrop: ['ALL'],
        SecurityOpt: ['no-new-privileges'],
        ReadonlyRootfs: true,
        Sysctls: { 'net.ipv4.ip_unprivileged_port_start': '0' },
      },
    });
    // No mount of any kind: neither the Docker socket nor anything else.
    expect(JSON.stringify(spec)).not.toMatch(/Binds|Mounts|Volumes|docker\.sock|Privileged|CapAdd/);
  });

  it('is named after the cluster and the address, and reads the same for the same ports in any order', () => {
    expect(hostPortContainerName('dev', '172.30.0.130')).toBe('vind-dev-lb-172-30-0-130');
    expect(hostPortCommand(web('10.0.0.1', [443, 'TCP'], [80, 'TCP']))).toEqual(
      hostPortCommand(web('10.0.0.1', [80, 'TCP'], [443, 'TCP'])),
    );
  });
});

// ---- a fake Docker for the reconcile ----

interface FakeContainer {
  id: string;
  name: string;
  image: string;
  cmd: string[];
  labels: Record<string, string>;
  running: boolean;
  ports: Record<string, { HostIp: string; HostPort: string }[]>;
}

class FakeDocker implements HostPortEngine {
  readonly containers = new Map<string, FakeContainer>();
  readonly networks = new Map<string, NetworkDetails>();
  readonly calls: string[] = [];
  private ids = 0;
  private nextHostPort = 40000;
  failStart?: string;

  addNetwork(name: string, subnet: string): void {
    this.networks.set(name, {
      Name: name,
      IPAM: { Config: [{ Subnet: 'fd00:1::/64' }, { Subnet: subnet }] },
    });
  }

  /** A container as if made earlier (by a previous reconcile, or by something else). */
  add(container: Partial<FakeContainer> & { name: string; labels: Record<string, string> }): FakeContainer {
    const made: FakeContainer = {
      id: `id-${++this.ids}`,
      image: IMAGE,
      cmd: [],
      running: true,
      ports: {},
      ...container,
    };
    this.containers.set(made.id, made);
    return made;
  }

  /** Adds what a reconcile would make for a forward, as it was. */
  addForwarder(cluster: string, forward: HostPortForward, image = IMAGE): FakeContainer {
    const spec = hostPortContainerSpec(cluster, forward, image);
    return this.add({
      name: hostPortContainerName(cluster, forward.address),
      image,
      cmd: spec.Cmd,
      labels: spec.Labels,
      ports: this.bind(spec),
    });
  }

  private bind(spec: ContainerCreateBody) {
    return Object.fromEntries(
      Object.keys(spec.HostConfig.PortBindings ?? {}).map((key) => [
        key,
        [{ HostIp: '127.0.0.1', HostPort: String(this.nextHostPort++) }],
      ]),
    );
  }

  byName(name: string): FakeContainer | undefined {
    return [...this.containers.values()].find((c) => c.name === name);
  }

  async inspectNetwork(name: string) {
    return this.networks.get(name);
  }

  async listContainers(labels: Record<string, string>) {
    return [...this.containers.values()]
      .filter((c) => Object.entries(labels).every(([key, value]) => c.labels[key] === value))
      .map((c) => ({ Id: c.id, Names: [`/${c.name}`], Labels: c.labels }));
  }

  async inspectContainer(id: string): Promise<ContainerDetails | undefined> {
    const c = this.containers.get(id);
    if (!c) return undefined;
    return {
      Id: c.id,
      Name: `/${c.name}`,
      Image: c.image,
      Config: { Cmd: c.cmd, Labels: c.labels },
      State: { Running: c.running },
      NetworkSettings: { Ports: c.running ? c.ports : {} },
    };
  }

  async createContainer(name: string, body: ContainerCreateBody) {
    this.calls.push(`create ${name}`);
    if (this.byName(name)) throw new Error(`creating container ${name}: Conflict. The name is in use`);
    const made = this.add({ name, image: body.Image, cmd: body.Cmd, labels: body.Labels, running: false });
    made.ports = this.bind(body);
    return made.id;
  }

  async startContainer(id: string) {
    const c = this.containers.get(id)!;
    this.calls.push(`start ${c.name}`);
    if (this.failStart === c.name) {
      throw new Error(
        `starting container ${id}: no available IPv4 addresses on this network's address pools`,
      );
    }
    c.running = true;
  }

  async removeContainer(id: string) {
    this.calls.push(`remove ${this.containers.get(id)?.name ?? id}`);
    this.containers.delete(id);
  }
}

const hostPortOf = (c: FakeContainer | undefined, key: string) => Number(c!.ports[key]![0]!.HostPort);

describe('reconciling a cluster’s forwarders', () => {
  let docker: FakeDocker;
  beforeEach(() => {
    docker = new FakeDocker();
    docker.addNetwork('vind-dev', '172.30.0.0/24');
    docker.addNetwork('vind-other', '172.30.1.0/24');
  });

  it('creates what is missing and answers the host ports, in the order asked', async () => {
    const { forwards, changes } = await reconcileHostPorts(docker, IMAGE, 'dev', [
      web('172.30.0.129', [80, 'TCP'], [53, 'UDP']),
      web('172.30.0.128', [443, 'TCP']),
    ]);
    const a = docker.byName('vind-dev-lb-172-30-0-129');
    const b = docker.byName('vind-dev-lb-172-30-0-128');
    expect(a?.running && b?.running).toBe(true);
    expect(a!.cmd).toEqual(['host-port', '172.30.0.129', '53/UDP', '80/TCP']);
    expect(forwards).toEqual<PublishedForward[]>([
      {
        address: '172.30.0.129',
        ports: [
          { port: 80, protocol: 'TCP', hostPort: hostPortOf(a, '80/tcp') },
          { port: 53, protocol: 'UDP', hostPort: hostPortOf(a, '53/udp') },
        ],
      },
      {
        address: '172.30.0.128',
        ports: [{ port: 443, protocol: 'TCP', hostPort: hostPortOf(b, '443/tcp') }],
      },
    ]);
    expect(changes.sort()).toEqual(['created vind-dev-lb-172-30-0-128', 'created vind-dev-lb-172-30-0-129']);
  });

  it('leaves a matching forwarder alone, replaces a changed one, removes one not wanted', async () => {
    const kept = docker.addForwarder('dev', web('172.30.0.128', [80, 'TCP']));
    const changed = docker.addForwarder('dev', web('172.30.0.129', [80, 'TCP']));
    const stale = docker.addForwarder('dev', web('172.30.0.130', [80, 'TCP']));
    const { forwards, changes } = await reconcileHostPorts(docker, IMAGE, 'dev', [
      web('172.30.0.128', [80, 'TCP']),
      web('172.30.0.129', [80, 'TCP'], [8080, 'TCP']),
    ]);
    expect(docker.containers.get(kept.id)).toBe(kept);
    expect(docker.containers.has(changed.id)).toBe(false);
    expect(docker.containers.has(stale.id)).toBe(false);
    const replaced = docker.byName('vind-dev-lb-172-30-0-129')!;
    expect(replaced.cmd).toEqual(['host-port', '172.30.0.129', '80/TCP', '8080/TCP']);
    expect(forwards[0]).toEqual({
      address: '172.30.0.128',
      ports: [{ port: 80, protocol: 'TCP', hostPort: hostPortOf(kept, '80/tcp') }],
    });
    expect(forwards[1]!.ports.map((p) => p.hostPort)).toEqual([
      hostPortOf(replaced, '80/tcp'),
      hostPortOf(replaced, '8080/tcp'),
    ]);
    expect(changes.sort()).toEqual(['removed vind-dev-lb-172-30-0-130', 'replaced vind-dev-lb-172-30-0-129']);
    expect(docker.calls).not.toContain('create vind-dev-lb-172-30-0-128');
  });

  it('replaces a forwarder of another image, and starts a stopped one', async () => {
    docker.addForwarder('dev', web('172.30.0.128', [80, 'TCP']), OLD_IMAGE);
    const stopped = docker.addForwarder('dev', web('172.30.0.129', [80, 'TCP']));
    stopped.running = false;
    const { changes } = await reconcileHostPorts(docker, IMAGE, 'dev', [
      web('172.30.0.128', [80, 'TCP']),
      web('172.30.0.129', [80, 'TCP']),
    ]);
    expect(docker.byName('vind-dev-lb-172-30-0-128')!.image).toBe(IMAGE);
    expect(stopped.running).toBe(true);
    expect(changes.sort()).toEqual(['replaced vind-dev-lb-172-30-0-128', 'started vind-dev-lb-172-30-0-129']);
  });

  it("touches neither another cluster's forwarders nor containers that are not forwarders", async () => {
    const theirs = docker.addForwarder('other', web('172.30.1.128', [80, 'TCP']));
    const node = docker.add({
      name: 'dev-worker',
      labels: { [LABELS.cluster]: 'dev', [LABELS.role]: 'worker' },
    });
    const cache = docker.add({ name: IMAGE_CACHE.container, labels: { [LABELS.role]: 'image-cache' } });
    const { forwards } = await reconcileHostPorts(docker, IMAGE, 'dev', []);
    expect(forwards).toEqual([]);
    expect([...docker.containers.values()]).toEqual([theirs, node, cache]);
    expect(docker.calls).toEqual([]);
  });

  it('removes everything of the cluster for an empty set', async () => {
    docker.addForwarder('dev', web('172.30.0.128', [80, 'TCP']));
    docker.addForwarder('dev', web('172.30.0.200', [53, 'UDP']));
    await reconcileHostPorts(docker, IMAGE, 'dev', []);
    expect(await docker.listContainers({ [LABELS.cluster]: 'dev' })).toEqual([]);
  });

  it.each([
    [
      'outside the network',
      '172.30.1.128',
      /172\.30\.1\.128 is not a LoadBalancer address of vind-dev \(172\.30\.0\.0\/24, host numbers 128-254\)/,
    ],
    ['a node address', '172.30.0.3', /172\.30\.0\.3 is not a LoadBalancer address/],
    ["Docker's dynamic range", '172.30.0.127', /172\.30\.0\.127 is not a LoadBalancer address/],
    ['the broadcast address', '172.30.0.255', /172\.30\.0\.255 is not a LoadBalancer address/],
  ])('refuses an address %s before making anything', async (_what, address, message) => {
    const stale = docker.addForwarder('dev', web('172.30.0.130', [80, 'TCP']));
    const asked = reconcileHostPorts(docker, IMAGE, 'dev', [
      web('172.30.0.128', [80, 'TCP']),
      web(address, [80, 'TCP']),
    ]);
    await expect(asked).rejects.toThrow(message);
    await expect(asked).rejects.toBeInstanceOf(HostPortError);
    expect(docker.calls).toEqual([]);
    expect(docker.containers.get(stale.id)).toBe(stale);
  });

  it('refuses a cluster without a network', async () => {
    const asked = reconcileHostPorts(docker, IMAGE, 'gone', [web('172.30.2.128', [80, 'TCP'])]);
    await expect(asked).rejects.toThrow('the network vind-gone of cluster gone does not exist');
    await expect(asked).rejects.toMatchObject({ status: 400 });
  });

  it("passes Docker's failure on, after trying every address", async () => {
    docker.failStart = 'vind-dev-lb-172-30-0-128';
    const asked = reconcileHostPorts(docker, IMAGE, 'dev', [
      web('172.30.0.128', [80, 'TCP']),
      web('172.30.0.129', [80, 'TCP']),
    ]);
    await expect(asked).rejects.toThrow(
      /^vind-dev-lb-172-30-0-128: starting container \S+: no available IPv4 addresses/,
    );
    await expect(asked).rejects.not.toBeInstanceOf(HostPortError);
    expect(docker.byName('vind-dev-lb-172-30-0-129')?.running).toBe(true);
  });

  it('learns its image from its own container, by hostname', async () => {
    docker.add({ name: 'vind-image-cache', labels: {} });
    const self = [...docker.containers.values()][0]!;
    expect(await ownImage(docker, self.id)).toBe(IMAGE);
    await expect(ownImage(docker, 'f00dfeed1234')).rejects.toThrow(
      'the image cache cannot find its own container "f00dfeed1234" in Docker to learn its image',
    );
  });

  it('runs one reconcile of a cluster at a time, and the last set wins', async () => {
    let running = 0;
    let most = 0;
    const slow: HostPortEngine = {
      ...docker,
      inspectNetwork: async (name) => {
        running++;
        most = Math.max(most, running);
        await new Promise((resolve) => setTimeout(resolve, 20));
        running--;
        return docker.inspectNetwork(name);
      },
      listContainers: (labels) => docker.listContainers(labels),
      inspectContainer: (id) => docker.inspectContainer(id),
      createContainer: (name, body) => docker.createContainer(name, body),
      startContainer: (id) => docker.startContainer(id),
      removeContainer: (id) => docker.removeContainer(id),
    };
    const reported: string[] = [];
    const hostPorts = new HostPorts(
      slow,
      async () => IMAGE,
      (cluster, changes) => reported.push(`${cluster}: ${changes.join(', ')}`),
    );
    const [first, second] = await Promise.all([
      hostPorts.publish('dev', [web('172.30.0.128', [80, 'TCP'])]),
      hostPorts.publish('dev', [web('172.30.0.129', [80, 'TCP'])]),
    ]);
    expect(most).toBe(1);
    expect(first).toHaveLength(1);
    expect(second[0]!.address).toBe('172.30.0.129');
    expect([...docker.containers.values()].map((c) => c.name)).toEqual(['vind-dev-lb-172-30-0-129']);
    expect(reported).toEqual([
      'dev: created vind-dev-lb-172-30-0-128',
      'dev: removed vind-dev-lb-172-30-0-128, created vind-dev-lb-172-30-0-129',
    ]);
  });
});

// ---- the broker's operation and the registry's endpoint ----

describe('the container calls on the Docker socket', () => {
  let docker: Server;
  let dockerSocket: string;
  const seen: { method: string; path: string; body: string }[] = [];

  beforeAll(async () => {
    // A fake Docker: records what it is asked; knows one container and one network.
    dockerSocket = join(scratch, 'containers-docker.sock');
    docker = createServer((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => (body += c.toString()));
      req.on('end', () => {
        seen.push({ method: req.method!, path: req.url!, body });
        const json = (status: number, value: unknown) => {
          res.writeHead(status, { 'Content-Type': 'application/json' });
          res.end(JSON.stringify(value));
        };
        const path = req.url!.replace(/^\/v1\.41/, '');
        if (path === '/networks/vind-dev') json(200, { Name: 'vind-dev' });
        else if (path.startsWith('/networks/')) json(404, { message: 'network not found' });
        else if (path.startsWith('/containers/json')) json(200, [{ Id: 'abc', Names: ['/x'] }]);
        else if (path === '/containers/abc/json') json(200, { Id: 'abc', Name: '/x' });
        else if (path.startsWith('/containers/create'))
          json(409, { message: 'Conflict.\nThe name is in use' });
        else if (path === '/containers/abc/start') json(304, {});
        else if (path.startsWith('/containers/abc?')) json(204, {});
        else json(404, { message: 'No such container: gone' });
      });
    });
    await new Promise<void>((resolve) => docker.listen(dockerSocket, resolve));
  });
  afterAll(() => docker.close());

  it('asks the Engine API as the broker needs, and reads what is not there as undefined', async () => {
    const engine = hostEngine([], dockerSocket);
    expect(await engine.inspectNetwork('vind-dev')).toEqual({ Name: 'vind-dev' });
    expect(await engine.inspectNetwork('vind-gone')).toBeUndefined();
    expect(await engine.listContainers({ [LABELS.cluster]: 'dev', [LABELS.role]: 'host-port' })).toEqual([
      { Id: 'abc', Names: ['/x'] },
    ]);
    expect(await engine.inspectContainer('abc')).toEqual({ Id: 'abc', Name: '/x' });
    expect(await engine.inspectContainer('gone')).toBeUndefined();
    const spec = hostPortContainerSpec('dev', web('172.30.0.128', [80, 'TCP']), IMAGE);
    await expect(engine.createContainer('vind-dev-lb-172-30-0-128', spec)).rejects.toThrow(
      'creating container vind-dev-lb-172-30-0-128: Conflict.',
    );
    await engine.startContainer('abc');
    await engine.removeContainer('abc');
    await engine.removeContainer('gone');
    const filters = encodeURIComponent(
      JSON.stringify({ label: [`${LABELS.cluster}=dev`, `${LABELS.role}=host-port`] }),
    );
    expect(seen.map((s) => `${s.method} ${s.path}`)).toEqual([
      'GET /v1.41/networks/vind-dev',
      'GET /v1.41/networks/vind-gone',
      `GET /v1.41/containers/json?all=1&filters=${filters}`,
      'GET /v1.41/containers/abc/json',
      'GET /v1.41/containers/gone/json',
      'POST /v1.41/containers/create?name=vind-dev-lb-172-30-0-128',
      'POST /v1.41/containers/abc/start',
      'DELETE /v1.41/containers/abc?force=1&v=1',
      'DELETE /v1.41/containers/gone?force=1&v=1',
    ]);
    expect(JSON.parse(seen[5]!.body)).toEqual(spec);
  });
});

/** A raw request: method, path and body exactly as given. */
function send(
  target: { socketPath: string } | { port: number },
  method: string,
  path: string,
  body?: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const where = 'socketPath' in target ? target : { host: '127.0.0.1', port: target.port };
    const req = request({ ...where, method, path, headers }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('the broker’s host-port operation', () => {
  let docker: FakeDocker;
  let socket: string;
  let server: Server;

  beforeAll(async () => {
    docker = new FakeDocker();
    docker.addNetwork('vind-dev', '172.30.0.0/24');
    const engine: Engine = {
      inspect: async () => undefined,
      export: async () => Readable.from([]),
      pull: async () => undefined,
      inspectNetwork: (name) => docker.inspectNetwork(name),
      listContainers: (labels) => docker.listContainers(labels),
      inspectContainer: (id) => docker.inspectContainer(id),
      createContainer: (name, body) => docker.createContainer(name, body),
      startContainer: (id) => docker.startContainer(id),
      removeContainer: (id) => docker.removeContainer(id),
      sleep: runtimeSleepEngine(new FakeRuntime()),
    };
    socket = join(scratch, 'broker', 'engine.sock');
    server = await startBroker(socket, engine, { ownImage: async () => IMAGE });
  });
  afterAll(() => server.close());
  beforeEach(() => {
    docker.calls.length = 0;
  });

  it('publishes through its client and answers the host ports', async () => {
    const published = await brokerHostPorts(socket).publish('dev', [web('172.30.0.128', [80, 'TCP'])]);
    const made = docker.byName('vind-dev-lb-172-30-0-128');
    expect(published).toEqual([
      {
        address: '172.30.0.128',
        ports: [{ port: 80, protocol: 'TCP', hostPort: hostPortOf(made, '80/tcp') }],
      },
    ]);
  });

  it('refuses, with the status, an address outside the network', async () => {
    const asked = brokerHostPorts(socket).publish('dev', [web('10.0.0.128', [80, 'TCP'])]);
    await expect(asked).rejects.toMatchObject({
      status: 400,
      message: expect.stringContaining('10.0.0.128'),
    });
  });

  const valid = JSON.stringify({ forwards: [web('172.30.0.128', [80, 'TCP'])] });

  it.each([
    ['PUT', '/host-ports', valid],
    ['PUT', '/host-ports?cluster=Dev', valid],
    ['PUT', '/host-ports?cluster=dev%2F..', valid],
    ['PUT', `/host-ports?cluster=${'d'.repeat(33)}`, valid],
    ['PUT', '/host-ports?cluster=dev&cluster=other', valid],
    ['PUT', '/host-ports?cluster=dev&reference=docker.io%2Flibrary%2Fapp%3A1', valid],
    ['POST', '/host-ports?cluster=dev', valid],
    ['GET', '/host-ports?cluster=dev', undefined],
    ['PUT', '/host-ports?cluster=dev', '{"forwards": [{"address": "172.30.0.128"}]}'],
    ['PUT', '/host-ports?cluster=dev', JSON.stringify({ forwards: [web('172.30.0.128', [0, 'TCP'])] })],
    ['PUT', '/host-ports?cluster=dev', 'not json'],
    ['PUT', '/host-ports?cluster=dev', JSON.stringify({ forwards: [], pad: 'x'.repeat(70_000) })],
  ])('refuses %s %s without asking the engine', async (method, path, body) => {
    const response = await send({ socketPath: socket }, method, path, body);
    expect(response.status).toBeGreaterThanOrEqual(400);
    expect(response.status).toBeLessThan(500);
    expect(JSON.parse(response.body)).toEqual({ message: expect.any(String) });
    expect(docker.calls).toEqual([]);
  });

  it('reads the operation and the cluster from the request line', () => {
    expect(brokerRequest('PUT', '/host-ports?cluster=dev')).toEqual({
      operation: 'host-ports',
      cluster: 'dev',
    });
    expect(() => brokerRequest('PUT', '/host-ports?reference=dev')).toThrow(
      '/host-ports takes one parameter, cluster',
    );
    expect(() => brokerRequest('PUT', '/inspect?reference=docker.io%2Flibrary%2Fapp%3A1')).toThrow(
      /PUT \/host-ports/,
    );
  });
});

/** A cluster's token, as the CLI writes it into the cache's tokens folder. */
async function registerToken(root: string, cluster: string): Promise<string> {
  const token = randomBytes(32).toString('hex');
  await mkdir(join(root, 'tokens'), { recursive: true });
  await writeFile(join(root, 'tokens', cluster), `${token}\n`);
  return token;
}

describe('which cluster a token belongs to', () => {
  it('names the cluster of the file the token is in, and no cluster for anything else', async () => {
    const root = join(scratch, 'tokens-lookup');
    const dev = await registerToken(root, 'dev');
    const other = await registerToken(root, 'other');
    await writeFile(join(root, 'tokens', 'late.tmp'), randomBytes(32).toString('hex'));
    const store = new TokenStore(join(root, 'tokens'));
    expect(await store.clusterOf(dev)).toBe('dev');
    expect(await store.clusterOf(other)).toBe('other');
    expect(await store.accepts(dev)).toBe(true);
    for (const header of ['ab'.repeat(32), dev.toUpperCase(), `${dev} `, '', undefined, [dev]]) {
      expect(await store.clusterOf(header)).toBeUndefined();
      expect(await store.accepts(header)).toBe(false);
    }
  });

  it('names no cluster for a token two clusters share, though it still accepts it', async () => {
    const root = join(scratch, 'tokens-shared');
    const token = await registerToken(root, 'a');
    await writeFile(join(root, 'tokens', 'b'), token);
    const store = new TokenStore(join(root, 'tokens'));
    expect(await store.accepts(token)).toBe(true);
    expect(await store.clusterOf(token)).toBeUndefined();
  });
});

describe('the registry’s host-port endpoint', () => {
  let root: string;
  let port: number;
  let registry: Server;
  let devToken: string;
  const asked: { cluster: string; forwards: HostPortForward[] }[] = [];
  let failure: Error | undefined;

  const publisher: HostPortPublisher = {
    async publish(cluster, forwards) {
      asked.push({ cluster, forwards });
      if (failure) throw failure;
      return forwards.map((f) => ({
        address: f.address,
        ports: f.ports.map((p) => ({ ...p, hostPort: 41000 })),
      }));
    },
  };

  beforeAll(async () => {
    root = join(scratch, 'registry');
    devToken = await registerToken(root, 'dev');
    const cache = new ImageCache(
      root,
      { inspect: async () => undefined, export: async () => Readable.from([]), pull: async () => undefined },
      { hostPorts: publisher },
    );
    registry = startRegistry(cache, 0, '127.0.0.1');
    await new Promise((resolve) => registry.once('listening', resolve));
    port = (registry.address() as AddressInfo).port;
  });
  afterAll(() => registry.close());
  beforeEach(() => {
    asked.length = 0;
    failure = undefined;
  });

  const put = (body: string, token?: string, method = 'PUT') =>
    send({ port }, method, HOST_PORTS_PATH, body, token ? { [IMAGE_CACHE.tokenHeader]: token } : {});
  const valid = JSON.stringify({ forwards: [web('172.30.0.128', [80, 'TCP'])] });

  it("hands the checked set to the broker as the token's cluster, and answers the host ports", async () => {
    const response = await put(valid, devToken);
    expect(response.status).toBe(200);
    expect(JSON.parse(response.body)).toEqual({
      forwards: [{ address: '172.30.0.128', ports: [{ port: 80, protocol: 'TCP', hostPort: 41000 }] }],
    });
    expect(asked).toEqual([{ cluster: 'dev', forwards: [web('172.30.0.128', [80, 'TCP'])] }]);
  });

  it('refuses without a token of a cluster, before reading the body', async () => {
    for (const token of [undefined, 'ab'.repeat(32), 'not a token']) {
      const response = await put(valid, token);
      expect(response.status).toBe(401);
      expect(JSON.parse(response.body)).toEqual({
        message: expect.stringContaining(IMAGE_CACHE.tokenHeader),
      });
    }
    expect(asked).toEqual([]);
  });

  it('takes PUT only', async () => {
    const response = await put('', devToken, 'GET');
    expect(response.status).toBe(405);
    expect(asked).toEqual([]);
  });

  it.each([
    ['a malformed body', '{"forwards": [{"address": "web"}]}', 'forwards[0] is not an object'],
    [
      'a body over 64 KiB',
      JSON.stringify({ forwards: [], pad: 'x'.repeat(70_000) }),
      'the body is over 64 KiB',
    ],
  ])('refuses %s with 400 and one line', async (_what, body, start) => {
    const response = await put(body, devToken);
    expect(response.status).toBe(400);
    const { message } = JSON.parse(response.body) as { message: string };
    expect(message).not.toContain('\n');
    if (start.startsWith('forwards')) expect(message).toMatch(/^forwards\[0\]/);
    else expect(message).toBe(start);
    expect(asked).toEqual([]);
  });

  it("relays the broker's refusal as 400 and anything else as 502", async () => {
    failure = new HostPortError(400, '10.0.0.1 is not a LoadBalancer address of vind-dev');
    expect(await put(valid, devToken)).toEqual({
      status: 400,
      body: JSON.stringify({ message: '10.0.0.1 is not a LoadBalancer address of vind-dev' }),
    });
    failure = new Error('creating container vind-dev-lb-172-30-0-128: Conflict\nmore');
    expect(await put(valid, devToken)).toEqual({
      status: 502,
      body: JSON.stringify({ message: 'creating container vind-dev-lb-172-30-0-128: Conflict' }),
    });
    failure = new HostPortError(404, 'no operation PUT /host-ports');
    expect((await put(valid, devToken)).status).toBe(502);
  });

  it('answers 502 when there is no broker to ask', async () => {
    const cache = new ImageCache(root, {
      inspect: async () => undefined,
      export: async () => Readable.from([]),
      pull: async () => undefined,
    });
    const lone = startRegistry(cache, 0, '127.0.0.1');
    await new Promise((resolve) => lone.once('listening', resolve));
    try {
      const response = await send(
        { port: (lone.address() as AddressInfo).port },
        'PUT',
        HOST_PORTS_PATH,
        valid,
        {
          [IMAGE_CACHE.tokenHeader]: devToken,
        },
      );
      expect(response.status).toBe(502);
    } finally {
      lone.close();
    }
  });
});
