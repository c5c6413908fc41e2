import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request, type Server as HttpServer } from 'node:http';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { runtimeSleepEngine, setSleepAfter, sleepCluster } from '../../cli/sleep.js';
import { brokerRequest } from '../../node-agent/image-cache/broker.js';
import { ClusterPower, PowerError } from '../../node-agent/image-cache/cluster-power.js';
import { ImageCache, startRegistry } from '../../node-agent/image-cache/registry.js';
import { FrontDoor } from '../../node-agent/front-door.js';
import { parseSleepAfter, formatSleepAfter } from '../../cli/duration.js';
import { resolveClusterConfig } from '../../cli/cluster-config.js';
import {
  decodeFrontDoorEnv,
  encodeFrontDoorEnv,
  FRONT_DOOR_ENV,
  IMAGE_CACHE,
  LABELS,
  type PowerAnswer,
  type PowerOperation,
  sleepRecordName,
  WAKE_PATH,
} from '../../shared/contract.js';
import { FakeRuntime } from '../support/fake-runtime.js';

const quiet = {
  step: <T>(_n: string, work: (note: (t: string) => void) => Promise<T>) => work(() => undefined),
};
const reporter = { ...quiet, info: () => undefined, warn: () => undefined };

async function cluster(runtime: FakeRuntime, name = 'dev'): Promise<void> {
  const common = {
    cluster: name,
    image: 'vind/node:x',
    securityMode: 'privileged' as const,
    network: `vind-${name}`,
    env: [],
    ports: [],
  };
  await runtime.runNode({
    ...common,
    name: `${name}-control-plane`,
    role: 'control-plane',
    address: '172.30.0.2',
    labels: { [LABELS.apiPort]: '40001' },
  });
  await runtime.runNode({
    ...common,
    name: `${name}-worker`,
    role: 'worker',
    address: '172.30.0.3',
    labels: {},
  });
  await runtime.runFrontDoor({
    cluster: name,
    image: 'vind/node:x',
    network: `vind-${name}`,
    port: { containerPort: 6443, hostPort: 40001, listenAddress: '127.0.0.1', protocol: 'TCP' },
    env: encodeFrontDoorEnv({
      cluster: name,
      upstream: { host: '172.30.0.2', port: 6443 },
      imageCache: 'http://vind-image-cache:5000',
      imageCacheToken: 'token',
      sleepAfterMs: 0,
    }),
    labels: {},
  });
}

async function states(runtime: FakeRuntime, name = 'dev'): Promise<Record<string, string>> {
  const containers = await runtime.listContainers([`${LABELS.cluster}=${name}`]);
  return Object.fromEntries(containers.map((c) => [c.name, c.state]));
}

describe('wake on demand and auto-sleep in the broker', () => {
  let runtime: FakeRuntime;
  let power: ClusterPower;

  beforeEach(async () => {
    runtime = new FakeRuntime();
    await cluster(runtime);
    power = new ClusterPower(runtimeSleepEngine(runtime));
  });

  it('pauses the nodes, not the front door, and says so once', async () => {
    expect(await power.run('sleep', 'dev')).toEqual({ state: 'slept' });
    expect(await states(runtime)).toEqual({
      'dev-control-plane': 'paused',
      'dev-worker': 'paused',
      'dev-front-door': 'running',
    });
    expect(runtime.restartPolicies.get('dev-worker')).toBe('no');
    expect(runtime.restartPolicies.has('dev-front-door')).toBe(false);
    expect(await power.run('sleep', 'dev')).toEqual({ state: 'asleep' });
  });

  it('wakes a paused or a stopped cluster, the control plane first, and removes the record', async () => {
    await power.run('sleep', 'dev');
    expect(await power.run('wake', 'dev')).toEqual({ state: 'woke', from: 'pause' });
    expect(Object.values(await states(runtime))).toEqual(['running', 'running', 'running']);
    expect(runtime.restartPolicies.get('dev-control-plane')).toBe('unless-stopped');
    expect((await runtime.listVolumes([LABELS.sleepMode])).length).toBe(0);

    await sleepCluster(runtime, 'dev', 'stop', reporter);
    runtime.calls.length = 0;
    expect(await power.run('wake', 'dev')).toEqual({ state: 'woke', from: 'stop' });
    expect(runtime.calls.filter((c) => c.startsWith('startContainer'))).toEqual([
      'startContainer dev-control-plane',
      'startContainer dev-worker',
    ]);
    expect(await power.run('wake', 'dev')).toEqual({ state: 'awake' });
  });

  it('wakes once for a burst of questions', async () => {
    await power.run('sleep', 'dev');
    runtime.calls.length = 0;
    const answers = await Promise.all([1, 2, 3].map(() => power.run('wake', 'dev')));
    expect(answers.map((a) => a.state).sort()).toEqual(['awake', 'awake', 'woke']);
    expect(runtime.calls.filter((c) => c.startsWith('unpause'))).toHaveLength(2);
  });

  it('keeps a checkpoint-mode control plane that a wake started, and restarts one a cut sleep left', async () => {
    await runtime.createVolume(sleepRecordName('dev'), {
      [LABELS.cluster]: 'dev',
      [LABELS.sleepMode]: 'checkpoint',
      [LABELS.sleepSince]: new Date(Date.now() - 10_000).toISOString(),
    });
    // Started after the sleep began (by `vind wake`, restoring): left alone.
    runtime.calls.length = 0;
    await power.run('wake', 'dev');
    expect(runtime.calls.filter((c) => c.includes('Container dev-control-plane'))).toEqual([]);
    // Running since before the sleep began: its daemons may be dumped and gone, so it starts again.
    await runtime.createVolume(sleepRecordName('dev'), {
      [LABELS.cluster]: 'dev',
      [LABELS.sleepMode]: 'checkpoint',
      [LABELS.sleepSince]: new Date(Date.now() + 10_000).toISOString(),
    });
    runtime.calls.length = 0;
    await power.run('wake', 'dev');
    expect(runtime.calls.filter((c) => c.includes('Container dev-control-plane'))).toEqual([
      'stopContainer dev-control-plane',
      'startContainer dev-control-plane',
    ]);
  });

  it('refuses a cluster stopped behind its back, and one that does not exist', async () => {
    await runtime.stopContainer('dev-worker');
    await expect(power.run('sleep', 'dev')).rejects.toMatchObject({ status: 409 });
    await expect(power.run('sleep', 'dev')).rejects.toThrow('is not running (dev-worker exited)');
    await expect(power.run('wake', 'gone')).rejects.toEqual(
      new PowerError(404, 'cluster "gone" does not exist: see `vind list`'),
    );
  });

  it('takes the wake and the sleep as cluster operations of the broker', () => {
    expect(brokerRequest('POST', '/wake?cluster=dev')).toEqual({ operation: 'wake', cluster: 'dev' });
    expect(brokerRequest('POST', '/sleep?cluster=dev')).toEqual({ operation: 'sleep', cluster: 'dev' });
    expect(() => brokerRequest('GET', '/wake?cluster=dev')).toThrow('no operation GET /wake');
    expect(() => brokerRequest('POST', '/wake?cluster=Dev/..')).toThrow();
    expect(() => brokerRequest('POST', '/wake?reference=dev')).toThrow('takes one parameter, cluster');
  });
});

describe('the registry’s wake and sleep endpoints', () => {
  let scratch: string;
  let registry: HttpServer;
  let port: number;
  let token: string;
  const asked: string[] = [];

  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'vind-front-door-'));
    token = randomBytes(32).toString('hex');
    await mkdir(join(scratch, 'tokens'), { recursive: true });
    await writeFile(join(scratch, 'tokens', 'dev'), `${token}\n`);
    const cache = new ImageCache(
      scratch,
      { inspect: async () => undefined, export: async () => Readable.from([]), pull: async () => undefined },
      {
        power: {
          run: async (operation, cluster) => {
            asked.push(`${operation} ${cluster}`);
            return { state: 'awake' };
          },
        },
      },
    );
    registry = startRegistry(cache, 0, '127.0.0.1');
    await new Promise((resolve) => registry.once('listening', resolve));
    port = (registry.address() as AddressInfo).port;
  });
  afterAll(async () => {
    registry.close();
    await rm(scratch, { recursive: true, force: true });
  });

  const post = (path: string, headers: Record<string, string>, method = 'POST') =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', reject);
      req.end();
    });

  it("asks for the token's cluster, and for nothing without a token", async () => {
    expect(await post(WAKE_PATH, { [IMAGE_CACHE.tokenHeader]: token })).toEqual({
      status: 200,
      body: '{"state":"awake"}',
    });
    expect((await post('/vind/v1/sleep', { [IMAGE_CACHE.tokenHeader]: token })).status).toBe(200);
    expect((await post(WAKE_PATH, {})).status).toBe(401);
    expect((await post(WAKE_PATH, { [IMAGE_CACHE.tokenHeader]: 'ab'.repeat(32) })).status).toBe(401);
    expect((await post(WAKE_PATH, { [IMAGE_CACHE.tokenHeader]: token }, 'GET')).status).toBe(405);
    expect(asked).toEqual(['wake dev', 'sleep dev']);
  });
});

/** An API server stand-in: answers each line it gets with `ok <line>`, until told to freeze. */
class Upstream {
  server!: Server;
  port = 0;
  frozen = false;
  readonly sockets = new Set<Socket>();

  async start(port = 0): Promise<void> {
    this.server = createServer((socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.on('data', (data) => {
        if (!this.frozen) socket.write(`ok ${data.toString()}`);
      });
    });
    await new Promise<void>((resolve) => this.server.listen(port, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

function exchange(socket: Socket, text: string): Promise<string> {
  return new Promise((resolve) => {
    socket.once('data', (data) => resolve(data.toString()));
    socket.write(text);
  });
}

function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => resolve(socket));
    socket.once('error', reject);
  });
}

describe('the front door', () => {
  let upstream: Upstream;
  let door: FrontDoor | undefined;
  let asked: PowerOperation[];
  let answer: (operation: PowerOperation) => Promise<PowerAnswer>;
  const open: Socket[] = [];

  beforeEach(async () => {
    upstream = new Upstream();
    await upstream.start();
    asked = [];
    answer = async () => ({ state: 'awake' });
  });
  afterEach(async () => {
    for (const socket of open.splice(0)) socket.destroy();
    await door?.close();
    door = undefined;
    await upstream.stop().catch(() => undefined);
  });

  async function openDoor(options: { sleepAfterMs?: number; ready?: () => Promise<boolean> } = {}) {
    door = new FrontDoor({
      listenPort: 0,
      listenHost: '127.0.0.1',
      upstream: { host: '127.0.0.1', port: upstream.port },
      power: (operation) => {
        asked.push(operation);
        return answer(operation);
      },
      sleepAfterMs: options.sleepAfterMs ?? 0,
      idleCheckMs: 50,
      upstreamReady: options.ready ?? (async () => true),
      report: () => undefined,
    });
    return door.listen();
  }

  it('passes bytes both ways, and asks about a wake only while the API server is quiet', async () => {
    const port = await openDoor();
    const first = await dial(port);
    open.push(first);
    expect(await exchange(first, 'get pods')).toBe('ok get pods');
    const second = await dial(port);
    open.push(second);
    expect(await exchange(second, 'get nodes')).toBe('ok get nodes');
    expect(asked).toEqual(['wake']);
  });

  it('holds a client while a stopped cluster starts, until the API server is ready', async () => {
    const port = upstream.port;
    await upstream.stop();
    let ready = false;
    answer = async () => {
      // The broker starts the containers; the API server listens a moment later.
      setTimeout(() => void upstream.start(port).then(() => (ready = true)), 300);
      return { state: 'woke', from: 'stop' };
    };
    const door = await openDoor({ ready: async () => ready });
    const client = await dial(door);
    open.push(client);
    const started = Date.now();
    expect(await exchange(client, 'get pods')).toBe('ok get pods');
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    expect(asked).toEqual(['wake']);
  });

  it('still connects when the cache cannot be asked', async () => {
    answer = async () => {
      throw new Error('connect ECONNREFUSED');
    };
    const client = await dial(await openDoor());
    open.push(client);
    expect(await exchange(client, 'version')).toBe('ok version');
  });

  it('asks again when an open connection stalls: the cluster went to sleep under it', async () => {
    const client = await dial(await openDoor());
    open.push(client);
    expect(await exchange(client, 'one')).toBe('ok one');
    upstream.frozen = true;
    answer = async () => {
      upstream.frozen = false;
      return { state: 'woke', from: 'pause' };
    };
    client.write('two');
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    expect(asked).toEqual(['wake', 'wake']);
    expect(await exchange(client, 'three')).toBe('ok three');
  });

  it('pauses the cluster after its idle time without a client, once, and not while bytes flow', async () => {
    const port = await openDoor({ sleepAfterMs: 400 });
    const client = await dial(port);
    open.push(client);
    for (let i = 0; i < 6; i++) {
      expect(await exchange(client, `ping ${i}`)).toBe(`ok ping ${i}`);
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
    expect(asked).toEqual(['wake']);
    answer = async (operation) => ({ state: operation === 'sleep' ? 'slept' : 'awake' });
    await new Promise((resolve) => setTimeout(resolve, 800));
    expect(asked).toEqual(['wake', 'sleep']);
    expect(door!.counts.sleeps).toBe(1);
  });
});

describe('the idle time', () => {
  it('reads durations and never, and refuses what is negative, malformed or too short', () => {
    expect(parseSleepAfter('30m')).toBe(1_800_000);
    expect(parseSleepAfter('1h30m')).toBe(5_400_000);
    expect(parseSleepAfter('never')).toBe(0);
    expect(parseSleepAfter('0')).toBe(0);
    expect(() => parseSleepAfter('-5m')).toThrow('invalid idle time "-5m": use a duration such as 30m');
    expect(() => parseSleepAfter('soon')).toThrow('invalid idle time "soon"');
    expect(() => parseSleepAfter('2s')).toThrow('idle time "2s" is too short: use at least 5s, or never');
    expect(formatSleepAfter(5_400_000)).toBe('1h30m');
    expect(formatSleepAfter(15_000)).toBe('15s');
  });

  it('comes from the flag before the file', () => {
    const file = 'apiVersion: vind.dev/v1alpha1\nkind: Cluster\nsleepAfter: 45m\n';
    const resolve = (sleepAfter?: string, fileText?: string) =>
      resolveClusterConfig({ flags: { sleepAfter }, fileText, defaultKubernetesVersion: 'v1.36.3' });
    expect(resolve().sleepAfterMs).toBe(0);
    expect(resolve(undefined, file).sleepAfterMs).toBe(2_700_000);
    expect(resolve('10m', file).sleepAfterMs).toBe(600_000);
    expect(() => resolve('-1m')).toThrow('invalid --sleep-after: invalid idle time "-1m"');
    expect(() => resolve(undefined, file.replace('45m', '1s'))).toThrow(/sleepAfter.*too short/);
  });

  it('is changed by making the front door again with the same settings and port', async () => {
    const runtime = new FakeRuntime();
    await cluster(runtime);
    await setSleepAfter(runtime, 'dev', 900_000);
    const door = await runtime.inspectContainer('dev-front-door');
    expect(door?.labels[LABELS.sleepAfter]).toBe('15m');
    const env = (await runtime.exec('dev-front-door', ['printenv', FRONT_DOOR_ENV])).stdout.trim();
    expect(decodeFrontDoorEnv({ [FRONT_DOOR_ENV]: env })).toMatchObject({
      cluster: 'dev',
      upstream: { host: '172.30.0.2', port: 6443 },
      imageCacheToken: 'token',
      sleepAfterMs: 900_000,
    });
    await setSleepAfter(runtime, 'dev', 0);
    expect((await runtime.inspectContainer('dev-front-door'))?.labels[LABELS.sleepAfter]).toBeUndefined();
    await expect(setSleepAfter(runtime, 'gone', 0)).rejects.toThrow('cluster "gone" does not exist');
    await runtime.removeContainer('dev-front-door');
    await expect(setSleepAfter(runtime, 'dev', 0)).rejects.toThrow('has no front door');
  });
});
