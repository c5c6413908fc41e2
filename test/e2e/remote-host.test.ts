// The stand-in for a remote machine is faithful: its containers reach this host's veth address (and
// the ports the host publishes there), nothing else of the host and none of its Docker networks; behind
// NAT nothing reaches it, in `public` mode the host and its containers reach what it publishes while it
// cannot dial the host. Every refusal follows a positive control that shows the same path working.

import { createServer, connect, type Server, type Socket } from 'node:net';
import type Docker from 'dockerode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DockerRuntime, dockerRuntime } from '../../cli/runtime/docker-runtime.js';
import {
  REMOTE_HOST,
  copyImageToRemote,
  remoteDocker,
  remoteHostStatus,
  remoteRuntime,
  setRemoteMode,
  startRemoteHost,
  stopRemoteHost,
} from '../support/remote-host.js';
import { NODE_IMAGE, docker, requireNodeImage, uniqueName, waitFor } from './helpers.js';

const TEST_LABEL = { 'dev.vind.test': 'remote-host' };
const PORT = 8080;
const ECHO_PORT = 8081;
/** A refused connection fails at once; a dropped one takes this long to give up on. */
const CONNECT_TIMEOUT_S = 3;

/** A TCP server that answers every connection with one line and closes it; and an echo server. */
function serverScript(answer: string): string[] {
  const source =
    `const net = require('net');` +
    `net.createServer((c) => c.end(${JSON.stringify(`${answer}\n`)})).listen(${PORT});` +
    `net.createServer((c) => c.pipe(c)).listen(${ECHO_PORT});`;
  return ['/usr/bin/tini', '--', '/usr/bin/node', '-e', source];
}
const IDLE = ['/usr/bin/tini', '--', 'sleep', 'infinity'];

async function listenOn(address: string, answer: string): Promise<{ server: Server; port: number }> {
  const server = createServer((socket) => socket.end(`${answer}\n`));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, address, resolve);
  });
  const bound = server.address();
  if (!bound || typeof bound === 'string') throw new Error('the server has no port');
  return { server, port: bound.port };
}

/** Connects from this host; the answer line, or undefined when the connection could not be made. */
function answerFromHost(address: string, port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = connect({ host: address, port });
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(undefined);
    }, CONNECT_TIMEOUT_S * 1000);
    socket.on('data', (chunk) => (data += chunk.toString()));
    socket.on('end', () => {
      clearTimeout(timer);
      resolve(data.trim());
    });
    socket.on('error', () => {
      clearTimeout(timer);
      resolve(undefined);
    });
  });
}

/** Sends a line on an open connection to an echo server; the line echoed, or undefined if none came. */
function echoed(socket: Socket, line: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const onData = (chunk: Buffer) => {
      clearTimeout(timer);
      resolve(chunk.toString().trim());
    };
    const timer = setTimeout(() => {
      socket.off('data', onData);
      resolve(undefined);
    }, CONNECT_TIMEOUT_S * 1000);
    socket.once('data', onData);
    socket.write(`${line}\n`);
  });
}

/** Connects from inside a container; the answer line, or undefined when it could not connect. */
async function answerFromContainer(
  runtime: DockerRuntime,
  container: string,
  address: string,
  port: number,
): Promise<string | undefined> {
  const result = await runtime.exec(container, [
    'timeout',
    String(CONNECT_TIMEOUT_S),
    'bash',
    '-c',
    'exec 3<>"/dev/tcp/$0/$1" && cat <&3',
    address,
    String(port),
  ]);
  return result.exitCode === 0 ? result.stdout.trim() : undefined;
}

async function run(
  client: Docker,
  name: string,
  entrypoint: string[],
  options: { network?: string; publish?: boolean } = {},
): Promise<string> {
  const container = await client.createContainer({
    name,
    Image: NODE_IMAGE,
    Entrypoint: entrypoint,
    Cmd: [],
    Labels: TEST_LABEL,
    ExposedPorts: options.publish ? { [`${PORT}/tcp`]: {}, [`${ECHO_PORT}/tcp`]: {} } : undefined,
    HostConfig: {
      NetworkMode: options.network ?? 'bridge',
      PortBindings: options.publish
        ? { [`${PORT}/tcp`]: [{ HostPort: '' }], [`${ECHO_PORT}/tcp`]: [{ HostPort: '' }] }
        : undefined,
    },
  });
  await container.start();
  return name;
}

async function addressOf(client: Docker, name: string, network: string): Promise<string> {
  const info = await client.getContainer(name).inspect();
  const address = info.NetworkSettings.Networks[network]?.IPAddress;
  if (!address) throw new Error(`${name} has no address on ${network}`);
  return address;
}

async function publishedPort(client: Docker, name: string, port = PORT): Promise<number> {
  const info = await client.getContainer(name).inspect();
  const published = info.NetworkSettings.Ports[`${port}/tcp`]?.[0]?.HostPort;
  if (!published) throw new Error(`${name} does not publish ${port}`);
  return Number(published);
}

async function removeLabelled(client: Docker): Promise<void> {
  const containers = await client
    .listContainers({ all: true, filters: { label: ['dev.vind.test=remote-host'] } })
    .catch(() => []);
  await Promise.all(
    containers.map((c) =>
      client
        .getContainer(c.Id)
        .remove({ force: true, v: true })
        .catch(() => undefined),
    ),
  );
}

describe('the remote-host stand-in', () => {
  const network = uniqueName('vind-test-remote-host');
  const hostTarget = `${network}-target`;
  const hostClient = `${network}-client`;
  const remoteClient = uniqueName('remote-client');
  const remoteServer = uniqueName('remote-server');
  const servers: Server[] = [];
  let hostListenerPort = 0;
  let gateway = '';
  let gatewayListenerPort = 0;
  let targetAddress = '';
  let targetHostPort = 0;
  let remoteServerAddress = '';
  let remoteServerPort = 0;
  let remoteEchoPort = 0;

  beforeAll(async () => {
    await requireNodeImage();
    const started = Date.now();
    await startRemoteHost('nat');
    console.log(`stand-in started in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const copying = Date.now();
    const { copied } = await copyImageToRemote(NODE_IMAGE);
    console.log(
      `${NODE_IMAGE} ${copied ? 'copied' : 'already there'} in ${((Date.now() - copying) / 1000).toFixed(1)} s`,
    );

    const host = await listenOn(REMOTE_HOST.hostAddress, 'host-listener');
    servers.push(host.server);
    hostListenerPort = host.port;

    await docker().createNetwork({ Name: network, Driver: 'bridge', Labels: TEST_LABEL });
    gateway = await dockerRuntime().hostAddressOn(network);
    const onGateway = await listenOn(gateway, 'gateway-listener');
    servers.push(onGateway.server);
    gatewayListenerPort = onGateway.port;

    await run(docker(), hostTarget, serverScript('host-container'), { network, publish: true });
    await run(docker(), hostClient, IDLE, { network });
    await run(remoteDocker, remoteClient, IDLE);
    await run(remoteDocker, remoteServer, serverScript('remote-container'), { publish: true });
    targetAddress = await addressOf(docker(), hostTarget, network);
    targetHostPort = await publishedPort(docker(), hostTarget);
    remoteServerAddress = await addressOf(remoteDocker, remoteServer, 'bridge');
    remoteServerPort = await publishedPort(remoteDocker, remoteServer);
    remoteEchoPort = await publishedPort(remoteDocker, remoteServer, ECHO_PORT);
    // Node takes a moment to listen: both servers answer before any test relies on them.
    await waitFor(
      'the servers to listen',
      async () =>
        (await answerFromHost(targetAddress, PORT)) === 'host-container' &&
        (await answerFromContainer(remoteRuntime(), remoteClient, remoteServerAddress, PORT)) ===
          'remote-container'
          ? true
          : undefined,
      30_000,
    );
    console.log(`ready in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  });

  afterAll(async () => {
    for (const server of servers) server.close();
    await removeLabelled(remoteDocker);
    await removeLabelled(docker());
    await docker()
      .getNetwork(network)
      .remove()
      .catch(() => undefined);
    await stopRemoteHost();
  });

  it('runs in nat mode with its own engine', async () => {
    const status = await remoteHostStatus();
    expect(status).toMatchObject({ running: true, mode: 'nat' });
    const info = await remoteDocker.info();
    expect(info.DockerRootDir).toBe('/var/lib/vind-remote/docker');
    // The servers listen (a control for every refusal below that involves them).
    expect(await answerFromContainer(remoteRuntime(), remoteClient, remoteServerAddress, PORT)).toBe(
      'remote-container',
    );
    expect(await answerFromHost(targetAddress, PORT)).toBe('host-container');
  });

  it("reaches a listener on the host's veth address, and a port the host publishes there", async () => {
    expect(
      await answerFromContainer(remoteRuntime(), remoteClient, REMOTE_HOST.hostAddress, hostListenerPort),
    ).toBe('host-listener');
    // Docker DNATs the host's published port to the container: allowed by the original destination.
    expect(
      await answerFromContainer(remoteRuntime(), remoteClient, REMOTE_HOST.hostAddress, targetHostPort),
    ).toBe('host-container');
  });

  it("does not reach a container on the host's Docker network, nor the host's other addresses", async () => {
    // Positive controls: the host reaches both (the container was checked above), and so does a
    // container on that network.
    expect(await answerFromHost(gateway, gatewayListenerPort)).toBe('gateway-listener');
    expect(await answerFromContainer(dockerRuntime(), hostClient, targetAddress, PORT)).toBe(
      'host-container',
    );

    const direct = await answerFromContainer(remoteRuntime(), remoteClient, targetAddress, PORT);
    expect(direct).toBeUndefined();
    const otherAddress = await answerFromContainer(
      remoteRuntime(),
      remoteClient,
      gateway,
      gatewayListenerPort,
    );
    expect(otherAddress).toBeUndefined();
  });

  it('nat: neither the host nor its containers can open a connection to it', async () => {
    expect(await answerFromHost(REMOTE_HOST.remoteAddress, remoteServerPort)).toBeUndefined();
    expect(
      await answerFromContainer(dockerRuntime(), hostClient, REMOTE_HOST.remoteAddress, remoteServerPort),
    ).toBeUndefined();
  });

  it('public: the host and its containers reach what it publishes', async () => {
    await setRemoteMode('public');
    expect(await remoteHostStatus()).toMatchObject({ running: true, mode: 'public' });
    expect(await answerFromHost(REMOTE_HOST.remoteAddress, remoteServerPort)).toBe('remote-container');
    expect(
      await answerFromContainer(dockerRuntime(), hostClient, REMOTE_HOST.remoteAddress, remoteServerPort),
    ).toBe('remote-container');
  });

  it('public: it cannot open a connection to the host', async () => {
    expect(
      await answerFromContainer(remoteRuntime(), remoteClient, REMOTE_HOST.hostAddress, hostListenerPort),
    ).toBeUndefined();
    expect(
      await answerFromContainer(remoteRuntime(), remoteClient, REMOTE_HOST.hostAddress, targetHostPort),
    ).toBeUndefined();
  });

  it('a switch to nat cuts a connection the host began in public mode', async () => {
    const socket = connect({ host: REMOTE_HOST.remoteAddress, port: remoteEchoPort });
    socket.on('error', () => undefined);
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
      });
      expect(await echoed(socket, 'one')).toBe('one');
      await setRemoteMode('nat');
      expect(await echoed(socket, 'two')).toBeUndefined();
    } finally {
      socket.destroy();
    }
  });

  it('back in nat mode: the host cannot reach it, and it can dial the host again', async () => {
    expect(await remoteHostStatus()).toMatchObject({ running: true, mode: 'nat' });
    expect(await answerFromHost(REMOTE_HOST.remoteAddress, remoteServerPort)).toBeUndefined();
    expect(
      await answerFromContainer(remoteRuntime(), remoteClient, REMOTE_HOST.hostAddress, hostListenerPort),
    ).toBe('host-listener');
  });
});
