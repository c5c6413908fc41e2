// The image cache split in two: the engine broker (the Docker socket, the user's credentials, three
// operations) and the registry, which runs as an unprivileged user that cannot reach Docker itself.

import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, request, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  brokerReference,
  brokerSource,
  type Engine,
  hostEngine,
  startBroker,
} from '../../node-agent/image-cache/broker.js';
import type { HostPortEngine } from '../../node-agent/image-cache/host-ports.js';
import { runtimeSleepEngine } from '../../cli/sleep.js';
import { FakeRuntime } from '../support/fake-runtime.js';
import { closeToOthers, giveTo, REGISTRY_USER } from '../../node-agent/image-cache/isolation.js';
import { Supervisor } from '../../node-agent/supervisor.js';
import { poll } from '../../shared/poll.js';

const isRoot = process.getuid?.() === 0;

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'vind-broker-'));
  // Open for other users to walk through, as /run is: only what the test closes is closed.
  await chmod(scratch, 0o755);
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** A raw request on a unix socket: method and path exactly as given. */
function raw(socketPath: string, method: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, method, path }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** An engine without containers or networks, for the image operations. */
const noContainers: HostPortEngine & Pick<Engine, 'sleep'> = {
  sleep: runtimeSleepEngine(new FakeRuntime()),
  inspectNetwork: async () => undefined,
  listContainers: async () => [],
  inspectContainer: async () => undefined,
  createContainer: async () => {
    throw new Error('no containers here');
  },
  startContainer: async () => undefined,
  removeContainer: async () => undefined,
};

describe('the engine broker', () => {
  const calls: string[] = [];
  const fakeEngine: Engine = {
    ...noContainers,
    inspect: async (reference) => {
      calls.push(`inspect ${reference}`);
      return reference === 'docker.io/library/app:1' ? { Id: `sha256:${'1'.repeat(64)}` } : undefined;
    },
    export: async (reference) => {
      calls.push(`export ${reference}`);
      return Readable.from([Buffer.from('tar bytes')]);
    },
    pull: async (reference) => {
      calls.push(`pull ${reference}`);
      throw new Error(`pull access denied for ${reference}`);
    },
  };
  let socket: string;
  let server: Server;

  beforeAll(async () => {
    socket = join(scratch, 'broker', 'engine.sock');
    server = await startBroker(socket, fakeEngine);
  });
  afterAll(() => server.close());
  afterEach(() => {
    calls.length = 0;
  });

  it('answers the three operations through its client', async () => {
    const source = brokerSource(socket);
    expect(await source.inspect('docker.io/library/app:1')).toEqual({ Id: `sha256:${'1'.repeat(64)}` });
    expect(await source.inspect('docker.io/library/other:1')).toBeUndefined();
    const archive = await source.export('docker.io/library/app:1');
    const chunks: Buffer[] = [];
    for await (const chunk of archive as AsyncIterable<Buffer>) chunks.push(chunk);
    expect(Buffer.concat(chunks).toString()).toBe('tar bytes');
    await expect(source.pull('127.0.0.1:5000/team/app:v1')).rejects.toThrow(
      'pull access denied for 127.0.0.1:5000/team/app:v1',
    );
    expect(calls).toEqual([
      'inspect docker.io/library/app:1',
      'inspect docker.io/library/other:1',
      'export docker.io/library/app:1',
      'pull 127.0.0.1:5000/team/app:v1',
    ]);
  });

  it.each([
    ['GET', '/containers/json'],
    ['GET', '/v1.41/images/docker.io%2Flibrary%2Fapp%3A1/json'],
    ['POST', '/inspect?reference=docker.io%2Flibrary%2Fapp%3A1'],
    ['DELETE', '/export?reference=docker.io%2Flibrary%2Fapp%3A1'],
    ['GET', '/pull?reference=docker.io%2Flibrary%2Fapp%3A1'],
    ['GET', '/inspect/../export?reference=docker.io%2Flibrary%2Fapp%3A1'],
    ['GET', '/inspect'],
    ['GET', '/inspect?reference=docker.io%2Flibrary%2Fapp%3A1&reference=docker.io%2Flibrary%2Fx%3A1'],
    ['GET', '/inspect?reference=docker.io%2Flibrary%2Fapp%3A1&all=1'],
    ['GET', '/inspect?reference=..%2F..%2Fcontainers%2Fjson'],
    ['GET', '/export?reference=docker.io%2F..%2F..%2Fcontainers%2Fjson'],
    ['GET', '/inspect?reference=docker.io%2Flibrary%2Fapp%3A1%2Fjson%3Fx%3D'],
    ['GET', '/inspect?reference=app'],
    ['POST', '/pull?reference=evil.com%3Fx%3D1%2Fapp%3A1'],
    ['POST', '/pull?reference=%20docker.io%2Flibrary%2Fapp%3A1'],
    ['POST', '/pull?reference=docker.io%2Flibrary%2FApp%3A1'],
  ])('refuses %s %s without asking the engine', async (method, path) => {
    const response = await raw(socket, method, path);
    expect(response.status).toBeGreaterThanOrEqual(400);
    expect(response.status).toBeLessThan(500);
    expect(JSON.parse(response.body)).toEqual({ message: expect.any(String) });
    expect(calls).toEqual([]);
  });

  it('takes references only written in full', () => {
    expect(brokerReference('docker.io/library/redis:7')).toBe('docker.io/library/redis:7');
    expect(brokerReference('localhost:5000/app:v1')).toBe('localhost:5000/app:v1');
    expect(() => brokerReference('redis')).toThrow(
      /not written in full \(docker\.io\/library\/redis:latest\)/,
    );
    expect(() => brokerReference('docker.io/library/redis:7\n')).toThrow(/printable/);
  });
});

describe('the host engine behind the broker', () => {
  let dockerSocket: string;
  let docker: Server;
  const seen: { method: string; path: string; auth?: string }[] = [];

  beforeAll(async () => {
    // A fake Docker: records what it is asked, has one image, pulls anything.
    dockerSocket = join(scratch, 'docker.sock');
    docker = createServer((req: IncomingMessage, res) => {
      seen.push({
        method: req.method!,
        path: req.url!,
        auth: req.headers['x-registry-auth'] as string | undefined,
      });
      if (req.url!.endsWith('/json')) {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ Id: `sha256:${'2'.repeat(64)}` }));
      } else {
        res.writeHead(200);
        res.end('{"status":"Downloaded newer image"}\n');
      }
    });
    await new Promise<void>((resolve) => docker.listen(dockerSocket, resolve));
  });
  afterAll(() => docker.close());

  it("falls back to the credentials the CLI read through the user's helpers", async () => {
    const { registryAuth } = await import('../../node-agent/image-cache/engine.js');
    const config = join(scratch, 'only-store.json');
    await writeFile(config, JSON.stringify({ credsStore: 'pass', auths: { 'ghcr.io': {} } }));
    const helpers = join(scratch, 'helper-credentials.json');
    await writeFile(helpers, JSON.stringify({ 'ghcr.io': { username: 'me', password: 'from-pass' } }));
    const auth = await registryAuth('ghcr.io', config, helpers);
    expect(JSON.parse(Buffer.from(auth!, 'base64url').toString())).toMatchObject({
      username: 'me',
      password: 'from-pass',
      serveraddress: 'ghcr.io',
    });
    expect(await registryAuth('quay.io', config, helpers)).toBeUndefined();
  });

  it('adds the credentials of the Docker config to a pull itself', async () => {
    const config = join(scratch, 'docker-config.json');
    await writeFile(
      config,
      JSON.stringify({
        auths: { 'registry.example.com': { auth: Buffer.from('me:secret').toString('base64') } },
      }),
    );
    const socket = join(scratch, 'host-broker', 'engine.sock');
    const server = await startBroker(socket, hostEngine([config], dockerSocket));
    try {
      const source = brokerSource(socket);
      await source.pull('registry.example.com/team/app:v1');
      expect(await source.inspect('docker.io/library/app:1')).toEqual({ Id: `sha256:${'2'.repeat(64)}` });
      const [pull, inspect] = seen;
      expect(pull!.method).toBe('POST');
      expect(pull!.path).toBe('/v1.41/images/create?fromImage=registry.example.com%2Fteam%2Fapp&tag=v1');
      expect(JSON.parse(Buffer.from(pull!.auth!, 'base64url').toString())).toMatchObject({
        username: 'me',
        password: 'secret',
        serveraddress: 'registry.example.com',
      });
      expect(inspect!.path).toBe('/v1.41/images/docker.io%2Flibrary%2Fapp%3A1/json');
    } finally {
      server.close();
    }
  });
});

/** Runs node as the registry's user: connects to a unix socket and prints "connected" or the error code. */
function connectAs(user: { uid: number; gid: number }, socketPath: string): Promise<string> {
  const script =
    "require('net').connect(process.argv[1])" +
    ".on('connect', () => { console.log('connected'); process.exit(0); })" +
    ".on('error', (e) => { console.log(e.code); process.exit(0); })";
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['-e', script, socketPath],
      { uid: user.uid, gid: user.gid, cwd: '/' },
      (error, stdout) => (error ? reject(error) : resolve(stdout.trim())),
    );
  });
}

async function listenOn(socketPath: string, mode: number): Promise<Server> {
  const server = createServer((_req, res) => res.end());
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  await chmod(socketPath, mode);
  return server;
}

describe.skipIf(!isRoot)('the registry user and the Docker socket', () => {
  it('cannot connect to a socket only root may open', async () => {
    const dir = join(scratch, 'root-only');
    await mkdir(dir, { mode: 0o755 });
    const server = await listenOn(join(dir, 'docker.sock'), 0o600);
    try {
      expect(await connectAs(REGISTRY_USER, join(dir, 'docker.sock'))).toBe('EACCES');
    } finally {
      server.close();
    }
  });

  it('cannot reach even a socket open to all, once its folder is closed to others', async () => {
    const dir = join(scratch, 'engine');
    await mkdir(dir, { mode: 0o755 });
    const server = await listenOn(join(dir, 'docker.sock'), 0o666);
    try {
      // Control: a socket open to all is reachable while its folder is open.
      expect(await connectAs(REGISTRY_USER, join(dir, 'docker.sock'))).toBe('connected');
      await closeToOthers(dir);
      expect((await stat(dir)).mode & 0o777).toBe(0o700);
      expect(await connectAs(REGISTRY_USER, join(dir, 'docker.sock'))).toBe('EACCES');
    } finally {
      server.close();
    }
  });

  it("reaches the broker, whose socket belongs to the registry's group", async () => {
    const socket = join(scratch, 'vind-cache', 'engine.sock');
    const server = await startBroker(
      socket,
      {
        ...noContainers,
        inspect: async () => undefined,
        export: async () => Readable.from([]),
        pull: async () => undefined,
      },
      { gid: REGISTRY_USER.gid },
    );
    try {
      expect(((await stat(socket)).mode & 0o777).toString(8)).toBe('660');
      expect(await connectAs(REGISTRY_USER, socket)).toBe('connected');
      expect(await connectAs({ uid: 1000, gid: 1000 }, socket)).toBe('EACCES');
    } finally {
      server.close();
    }
  });

  it('gives the cache folder to the registry user, but not the tokens and the limit', async () => {
    const root = join(scratch, 'cache');
    await mkdir(join(root, 'blobs', 'sha256'), { recursive: true });
    await writeFile(join(root, 'blobs', 'sha256', 'a'), 'blob');
    await mkdir(join(root, 'tokens'));
    await writeFile(join(root, 'tokens', 'dev'), 'token');
    await writeFile(join(root, 'limit'), '1G');
    await giveTo(root, REGISTRY_USER, ['tokens', 'limit']);
    for (const path of ['', 'blobs', 'blobs/sha256', 'blobs/sha256/a']) {
      expect((await stat(join(root, path))).uid).toBe(REGISTRY_USER.uid);
    }
    for (const path of ['tokens', 'tokens/dev', 'limit']) expect((await stat(join(root, path))).uid).toBe(0);
  });

  it('starts a supervised process as the given user and group', async () => {
    const logDir = join(scratch, 'logs');
    const supervisor = new Supervisor(logDir);
    supervisor.start({
      name: 'whoami',
      command: process.execPath,
      args: ['-e', 'console.log(`ids ${process.getuid()}:${process.getgid()}`); setInterval(() => {}, 1000)'],
      uid: REGISTRY_USER.uid,
      gid: REGISTRY_USER.gid,
    });
    try {
      const line = await poll(
        'the child to print its ids',
        async () =>
          (await readFile(join(logDir, 'whoami.log'), 'utf8').catch(() => '')).match(/ids \S+/)?.[0],
        { timeoutMs: 10_000, intervalMs: 50 },
      );
      expect(line).toBe('ids 65534:65534');
    } finally {
      await supervisor.stopAll();
    }
  });
});
