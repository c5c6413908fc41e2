// LoadBalancer Services on a real cluster (a control plane and two workers, a LoadBalancer range of
// five addresses set in the config file): addresses from the range answer from the host over TCP and
// UDP; fixed and shared addresses; another class left alone; no node ports; Local keeps the
// client's address; a full range waits with an Event and deleting or retyping frees an address;
// the address moves when its node stops, and every address survives a restart of every node; with
// `hostPorts: always` every port is published on the host's 127.0.0.1 too.

import { createSocket } from 'node:dgram';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { PassThrough } from 'node:stream';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LABELS, LOAD_BALANCER, networkName } from '../../shared/contract.js';
import {
  docker,
  ensureEchoServerImage,
  kubectlBinary,
  kubectlFor,
  LABEL_CLUSTER,
  removeByLabel,
  requireNodeImage,
  runVind,
  spreadDeployment,
  uniqueName,
  waitFor,
} from './helpers.js';
import { dockerRuntime } from '../../cli/runtime/docker-runtime.js';

const cluster = uniqueName('e2e-lb');
const WORKERS = [`${cluster}-worker`, `${cluster}-worker2`];
const CONTROL_PLANE = `${cluster}-control-plane`;
/** Host numbers of the range: five addresses. */
const RANGE = { first: 200, last: 204 };

let scratch: string;
let kubeconfig: string;
let kubectl: ReturnType<typeof kubectlFor>;
let echoImage: string;
let subnetPrefix: string;

interface Service {
  metadata: { name: string; finalizers?: string[]; annotations?: Record<string, string> };
  spec: { ports: { port: number; nodePort?: number }[] };
  status: { loadBalancer?: { ingress?: { ip: string }[] } };
}

async function apply(objects: unknown[]) {
  const result = await kubectl(
    ['apply', '-f', '-'],
    JSON.stringify({ apiVersion: 'v1', kind: 'List', items: objects }),
  );
  expect(result.exitCode, result.stderr).toBe(0);
}

async function kubectlOk(args: string[]) {
  const result = await kubectl(args);
  expect(result.exitCode, result.stderr).toBe(0);
  return result.stdout;
}

async function service(name: string): Promise<Service> {
  return JSON.parse(await kubectlOk(['get', 'service', name, '-o', 'json'])) as Service;
}

function addressOf(svc: Service): string | undefined {
  return svc.status.loadBalancer?.ingress?.[0]?.ip;
}

function waitForAddress(name: string): Promise<string> {
  return waitFor(`an address for Service ${name}`, async () => addressOf(await service(name)), 20_000, 100);
}

async function eventsOf(name: string): Promise<{ type: string; reason: string; message: string }[]> {
  const out = await kubectlOk([
    'get',
    'events',
    '--field-selector',
    `involvedObject.kind=Service,involvedObject.name=${name}`,
    '-o',
    'json',
  ]);
  return (JSON.parse(out) as { items: { type: string; reason: string; message: string }[] }).items;
}

/** Waits for a Warning Event on the Service and returns its message. */
function waitForWarning(name: string, reason: string): Promise<string> {
  return waitFor(
    `a ${reason} Event for Service ${name}`,
    async () => (await eventsOf(name)).find((e) => e.type === 'Warning' && e.reason === reason)?.message,
    20_000,
  );
}

function loadBalancer(
  name: string,
  ports: { port: number; targetPort: number; protocol?: string; name?: string }[],
  spec: Record<string, unknown> = {},
  annotations: Record<string, string> = {},
  app = 'echo',
) {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name, annotations },
    spec: { type: 'LoadBalancer', selector: { app }, ports, ...spec },
  };
}

/** The body of GET http://host:port/ from this host, or undefined when nothing answers in 2 s. */
function httpGet(host: string, port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    // A new connection each time (no keep-alive), so that every request is balanced anew.
    const req = request({ host, port, path: '/', timeout: 2000, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(res.statusCode === 200 ? body.trim() : undefined));
      res.on('error', () => resolve(undefined));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
    req.end();
  });
}

/** One UDP datagram to host:port from this host; the answer, or undefined after a second. */
function udpAsk(host: string, port: number, message: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = createSocket('udp4');
    const done = (answer?: string) => {
      clearTimeout(timer);
      socket.close();
      resolve(answer);
    };
    const timer = setTimeout(() => done(undefined), 1000);
    socket.on('message', (data) => done(data.toString('utf8')));
    socket.on('error', () => done(undefined));
    socket.send(message, port, host);
  });
}

function answers(host: string, port: number, timeoutMs = 20_000): Promise<string> {
  return waitFor(`an HTTP answer from ${host}:${port}`, () => httpGet(host, port), timeoutMs, 100);
}

async function announcements(): Promise<Record<string, string>> {
  const { namespace, name } = LOAD_BALANCER.announcements;
  const out = await kubectlOk(['get', 'configmap', '-n', namespace, name, '-o', 'json']);
  return (JSON.parse(out) as { data?: Record<string, string> }).data ?? {};
}

function inRange(address: string): boolean {
  const host = Number(address.split('.')[3]);
  return address.startsWith(subnetPrefix) && host >= RANGE.first && host <= RANGE.last;
}

const echo = (replicas: number) =>
  spreadDeployment(
    'echo',
    {
      image: echoImage,
      ports: [{ containerPort: 8080 }, { containerPort: 5353, protocol: 'UDP' }],
      readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 },
    },
    replicas,
  );

async function waitForNodesReady() {
  const result = await kubectl(['wait', '--for=condition=Ready', 'nodes', '--all', '--timeout=180s']);
  expect(result.exitCode, result.stderr).toBe(0);
}

describe('LoadBalancer Services', () => {
  beforeAll(async () => {
    await requireNodeImage();
    scratch = await mkdtemp(join(tmpdir(), 'vind-e2e-lb-'));
    kubeconfig = join(scratch, 'kubeconfig');
    kubectl = kubectlFor(await kubectlBinary(), kubeconfig);
    echoImage = await ensureEchoServerImage();
    const config = join(scratch, 'cluster.yaml');
    await writeFile(
      config,
      [
        'apiVersion: vind.dev/v1alpha1',
        'kind: Cluster',
        'workers: [{}, {}]',
        'loadBalancer:',
        `  range: ${RANGE.first}-${RANGE.last}`,
        '  hostPorts: always',
        '',
      ].join('\n'),
    );
    const created = await runVind(['create', cluster, '--config', config], { KUBECONFIG: kubeconfig });
    expect(created.exitCode, created.stderr).toBe(0);
    const network = await docker().getNetwork(networkName(cluster)).inspect();
    const subnet = (network as { IPAM: { Config: { Subnet: string }[] } }).IPAM.Config[0]!.Subnet;
    subnetPrefix = subnet.split('.').slice(0, 3).join('.') + '.';
    await apply([echo(2)]);
    const rolled = await kubectl(['rollout', 'status', 'deployment/echo', '--timeout=180s']);
    expect(rolled.exitCode, rolled.stderr).toBe(0);
  }, 600_000);

  afterAll(async () => {
    await runVind(['delete', cluster]);
    await removeByLabel(cluster);
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 180_000);

  it('gives an address from the range that answers TCP from the host and from the cluster network', async () => {
    await apply([loadBalancer('web', [{ port: 80, targetPort: 8080 }])]);
    const address = await waitForAddress('web');
    expect(inRange(address), address).toBe(true);
    const answered = new Set<string>();
    await waitFor(
      'answers from both pods',
      async () => {
        const body = await httpGet(address, 80);
        if (body) answered.add(body.split(' ')[0]!);
        return answered.size === 2 ? true : undefined;
      },
      30_000,
      50,
    );
    // Another container on the cluster network reaches it too.
    let output = '';
    const sink = new PassThrough().on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    const [, container] = (await docker().run(
      'vind-test/busybox:1',
      ['-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 ${address} 80`],
      sink,
      { Labels: { [LABEL_CLUSTER]: cluster }, HostConfig: { NetworkMode: networkName(cluster) } },
    )) as [unknown, { remove(): Promise<void> }];
    await container.remove();
    expect(output).toMatch(/^HTTP\/1\.[01] 200/);
    const svc = await service('web');
    expect(svc.metadata.finalizers).toContain(LOAD_BALANCER.finalizer);
    const allocated = (await eventsOf('web')).find((e) => e.reason === 'IPAllocated');
    expect(allocated?.message).toBe(`Assigned address ${address}`);
  });

  it('carries UDP, and TCP and UDP on one Service', async () => {
    await apply([
      loadBalancer('mixed', [
        { name: 'http', port: 8080, targetPort: 8080 },
        { name: 'dns', port: 53, targetPort: 5353, protocol: 'UDP' },
      ]),
    ]);
    const address = await waitForAddress('mixed');
    const udp = await waitFor('a UDP answer', () => udpAsk(address, 53, 'hello'), 20_000, 100);
    expect(udp).toMatch(/^echo-\S+ \S+ hello$/);
    expect(await answers(address, 8080)).toMatch(/^echo-/);
  });

  it('gives a fixed address when asked, and refuses one outside the range with an Event', async () => {
    const wanted = `${subnetPrefix}${RANGE.last}`;
    await apply([
      loadBalancer(
        'fixed',
        [{ port: 81, targetPort: 8080 }],
        {},
        { [LOAD_BALANCER.addressAnnotation]: wanted },
      ),
      loadBalancer('outside', [{ port: 82, targetPort: 8080 }], { loadBalancerIP: `${subnetPrefix}50` }),
    ]);
    expect(await waitForAddress('fixed')).toBe(wanted);
    expect(await answers(wanted, 81)).toMatch(/^echo-/);
    const refused = await waitForWarning('outside', 'AddressRefused');
    expect(refused).toContain(`${subnetPrefix}50 is not in this cluster's LoadBalancer range`);
    expect(addressOf(await service('outside'))).toBeUndefined();
  });

  it('shares an address between Services whose ports differ, and refuses a port in common', async () => {
    const shared = addressOf(await service('fixed'))!;
    await apply([
      loadBalancer('sharing', [{ port: 83, targetPort: 8080 }], { loadBalancerIP: shared }),
      loadBalancer('clashing', [{ port: 81, targetPort: 8080 }], { loadBalancerIP: shared }),
    ]);
    expect(await waitForAddress('sharing')).toBe(shared);
    expect(await answers(shared, 83)).toMatch(/^echo-/);
    expect(await answers(shared, 81)).toMatch(/^echo-/);
    const refused = await waitForWarning('clashing', 'AddressRefused');
    expect(refused).toContain(`used by default/fixed with port 81/TCP`);
    await kubectlOk(['delete', 'service', 'clashing', 'outside']);
  });

  it('leaves another loadBalancerClass alone, and works without node ports', async () => {
    await apply([
      loadBalancer('other-class', [{ port: 84, targetPort: 8080 }], {
        loadBalancerClass: 'example.com/other',
      }),
      loadBalancer('no-node-ports', [{ port: 85, targetPort: 8080 }], {
        allocateLoadBalancerNodePorts: false,
      }),
    ]);
    const address = await waitForAddress('no-node-ports');
    expect(await answers(address, 85)).toMatch(/^echo-/);
    expect((await service('no-node-ports')).spec.ports[0]!.nodePort).toBeUndefined();
    const other = await service('other-class');
    expect(addressOf(other)).toBeUndefined();
    expect(other.metadata.finalizers ?? []).not.toContain(LOAD_BALANCER.finalizer);
    await kubectlOk(['delete', 'service', 'other-class']);
  });

  it('keeps the client address with externalTrafficPolicy Local, announced where the pod runs', async () => {
    await apply([
      spreadDeployment(
        'local',
        { image: echoImage, readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 } },
        1,
      ),
      loadBalancer(
        'local',
        [{ port: 86, targetPort: 8080 }],
        { externalTrafficPolicy: 'Local' },
        {},
        'local',
      ),
    ]);
    const rolled = await kubectl(['rollout', 'status', 'deployment/local', '--timeout=180s']);
    expect(rolled.exitCode, rolled.stderr).toBe(0);
    const address = await waitForAddress('local');
    const body = await answers(address, 86);
    const hostAddress = await dockerRuntime().hostAddressOn(networkName(cluster));
    expect(body.split(' ')[1]).toBe(hostAddress);
    const pod = JSON.parse(await kubectlOk(['get', 'pods', '-l', 'app=local', '-o', 'json'])) as {
      items: { spec: { nodeName: string } }[];
    };
    expect((await announcements())[address]).toBe(pod.items[0]!.spec.nodeName);
    // With the default policy the pod sees a node's address instead.
    const web = await answers(addressOf(await service('web'))!, 80);
    expect(web.split(' ')[1]).not.toBe(hostAddress);
  });

  it('keeps a Service waiting with an Event when the range is full, and frees addresses on delete and type change', async () => {
    // In use now: web, mixed, fixed (shared with sharing), no-node-ports, local: all five addresses.
    await apply([loadBalancer('waiting', [{ port: 87, targetPort: 8080 }])]);
    const full = await waitForWarning('waiting', 'AllocationFailed');
    expect(full).toContain(`every address of this cluster's LoadBalancer range`);
    const freed = addressOf(await service('no-node-ports'))!;
    await kubectlOk(['delete', 'service', 'no-node-ports']);
    expect(await waitForAddress('waiting')).toBe(freed);

    const retyped = addressOf(await service('mixed'))!;
    await kubectlOk(['patch', 'service', 'mixed', '-p', '{"spec":{"type":"ClusterIP"}}']);
    await waitFor(
      'the retyped Service to let go of its address and finalizer',
      async () => {
        const svc = await service('mixed');
        return !addressOf(svc) && !(svc.metadata.finalizers ?? []).includes(LOAD_BALANCER.finalizer)
          ? true
          : undefined;
      },
      20_000,
    );
    await apply([loadBalancer('after-retype', [{ port: 88, targetPort: 8080 }])]);
    expect(await waitForAddress('after-retype')).toBe(retyped);
    await kubectlOk(['delete', 'service', 'waiting', 'after-retype']);
  });

  it('moves an address to the other worker when its node stops', async () => {
    const address = addressOf(await service('web'))!;
    const announcer = (await announcements())[address]!;
    expect(WORKERS).toContain(announcer);
    await docker().getContainer(announcer).stop({ t: 0 });
    try {
      const moved = await waitFor(
        'the address to move',
        async () => {
          const now = (await announcements())[address];
          return now && now !== announcer ? now : undefined;
        },
        20_000,
        100,
      );
      expect(WORKERS).toContain(moved);
      // The pod on the stopped node is still listed until Kubernetes gives up on the node: an answer is
      // from the pod on the node that took the address.
      expect(await answers(address, 80)).toMatch(/^echo-/);
    } finally {
      await docker().getContainer(announcer).start();
      await waitForNodesReady();
    }
  });

  it('keeps every address across a restart of every node', async () => {
    const names = ['web', 'fixed', 'sharing', 'local'];
    const before = await Promise.all(names.map(async (n) => addressOf(await service(n))));
    await Promise.all([CONTROL_PLANE, ...WORKERS].map((c) => docker().getContainer(c).restart({ t: 5 })));
    await waitFor(
      'the API server',
      async () => ((await kubectl(['get', '--raw', '/readyz'])).exitCode === 0 ? true : undefined),
      180_000,
      500,
    );
    await waitForNodesReady();
    const after = await Promise.all(names.map(async (n) => addressOf(await service(n))));
    expect(after).toEqual(before);
    expect(await answers(before[0]!, 80, 120_000)).toMatch(/^echo-/);
  });

  it('publishes every port on the host with hostPorts: always', async () => {
    const text = await waitFor(
      'the host ports of Service web',
      async () => (await service('web')).metadata.annotations?.[LOAD_BALANCER.hostPortsAnnotation],
      60_000,
    );
    const match = /^80\/TCP=127\.0\.0\.1:(\d+)$/.exec(text);
    expect(match, text).not.toBeNull();
    expect(await answers('127.0.0.1', Number(match![1]))).toMatch(/^echo-/);
    const forwarders = await docker().listContainers({
      filters: { label: [`${LABEL_CLUSTER}=${cluster}`, `${LABELS.role}=host-port`] },
    });
    // One per address in use: web, fixed (shared with sharing), local.
    expect(forwarders).toHaveLength(3);
    const list = await runVind(['list']);
    expect(list.stdout).toContain(
      `${cluster}: ${addressOf(await service('web'))}:80/TCP -> 127.0.0.1:${match![1]}`,
    );
  });

  it('shows the addresses in use in vind list', async () => {
    const result = await runVind(['list', '--json']);
    expect(result.exitCode, result.stderr).toBe(0);
    const entry = (JSON.parse(result.stdout) as { name: string; loadBalancers?: number }[]).find(
      (c) => c.name === cluster,
    );
    // web, fixed (+ sharing), local
    expect(entry?.loadBalancers).toBe(3);
    const table = await runVind(['list']);
    expect(table.stdout).toMatch(/LOADBALANCERS/);
  });
});
