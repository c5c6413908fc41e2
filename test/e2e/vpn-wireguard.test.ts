// vpn/wireguard.ts really makes a tunnel: two node image containers on a network of their own, each
// running the library (bundled with esbuild, as the node agent is) with keys it made itself and a
// preshared key put in as a file; one dials the other, a ping crosses, both dumps show the handshake;
// a removed peer stops the traffic, syncPeers brings it back; SIGTERM takes each side down cleanly.

import { join } from 'node:path';
import type Docker from 'dockerode';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { demuxBuffer, dockerRuntime } from '../../cli/runtime/docker-runtime.js';
import { bundleNodeAgent } from '../../images/agent-bundle.js';
import { generatePresharedKey } from '../../vpn/keys.js';
import type { InterfaceState, Peer, PeerState } from '../../vpn/wireguard.js';
import type { Ready, UpConfig } from '../fixtures/wireguard/main.js';
import {
  NODE_IMAGE,
  PROJECT_ROOT,
  docker,
  ensureTestImage,
  requireNodeImage,
  uniqueName,
  waitFor,
} from './helpers.js';

const TEST_LABEL = { 'dev.vind.test': 'vpn-wireguard' };
const PROGRAM = '/etc/vind-test/wireguard.mjs';
const PSK_FILE = '/etc/vind-test/psk';
const STATE_DIR = '/run/vind-wg-test';
const PORT = 51820;

interface Side {
  container: string;
  underlay: string;
  tunnel: string;
  ready: Ready;
}

/** A tar archive of files for the Engine's upload, with a folder only root may enter. */
function archive(files: { path: string; content: string; mode: number }[]): NodeJS.ReadableStream {
  const pack = tar.pack();
  pack.entry({ name: 'etc/vind-test', type: 'directory', mode: 0o700 });
  for (const file of files) pack.entry({ name: file.path.replace(/^\//, ''), mode: file.mode }, file.content);
  pack.finalize();
  return pack as unknown as NodeJS.ReadableStream;
}

async function program(container: string, args: string[]): Promise<string> {
  const result = await dockerRuntime().exec(container, ['/usr/bin/node', PROGRAM, ...args]);
  if (result.exitCode !== 0) throw new Error(`${container}: ${args[0]} failed: ${result.stderr.trim()}`);
  return result.stdout;
}

async function show(side: Side): Promise<InterfaceState> {
  return JSON.parse(await program(side.container, ['show', 'wg0'])) as InterfaceState;
}

/** Runs busybox ping in the container's network namespace; its output and exit code. */
async function ping(
  side: Side,
  target: string,
  count: number,
): Promise<{ exitCode: number; output: string }> {
  const pinger = await docker().createContainer({
    Image: await ensureTestImage(),
    Cmd: ['-c', `busybox ping -c ${count} -i 0.2 -W 1 ${target}`],
    Labels: TEST_LABEL,
    HostConfig: { NetworkMode: `container:${side.container}` },
  });
  try {
    await pinger.start();
    const { StatusCode } = (await pinger.wait()) as { StatusCode: number };
    const logs = (await pinger.logs({ stdout: true, stderr: true })) as unknown as Buffer;
    return { exitCode: StatusCode, output: demuxBuffer(logs) };
  } finally {
    await pinger.remove({ force: true });
  }
}

function roundTrip(output: string): { min: number; avg: number; max: number } {
  const match = /round-trip min\/avg\/max = ([0-9.]+)\/([0-9.]+)\/([0-9.]+) ms/.exec(output);
  if (!match) throw new Error(`no round-trip figures in: ${output}`);
  return { min: Number(match[1]), avg: Number(match[2]), max: Number(match[3]) };
}

async function removeLabelled(client: Docker): Promise<void> {
  const containers = await client.listContainers({
    all: true,
    filters: { label: ['dev.vind.test=vpn-wireguard'] },
  });
  await Promise.all(
    containers.map((c) =>
      client
        .getContainer(c.Id)
        .remove({ force: true, v: true })
        .catch(() => undefined),
    ),
  );
}

describe('vpn/wireguard.ts between two containers', () => {
  const network = uniqueName('vind-test-wg');
  const psk = generatePresharedKey();
  let a: Side;
  let b: Side;
  let peerOfA: Peer;
  let peerOfB: Peer;

  async function start(name: string, tunnel: string, bundle: string): Promise<Side> {
    const config: UpConfig = {
      name: 'wg0',
      listenPort: PORT,
      addresses: [`${tunnel}/32`],
      routes: ['10.123.0.0/24'],
    };
    const container = await docker().createContainer({
      name,
      Image: NODE_IMAGE,
      Entrypoint: ['/usr/bin/tini', '--', '/usr/bin/node', PROGRAM, 'up', JSON.stringify(config)],
      Cmd: [],
      Labels: TEST_LABEL,
      HostConfig: {
        NetworkMode: network,
        CapAdd: ['NET_ADMIN'],
        Devices: [{ PathOnHost: '/dev/net/tun', PathInContainer: '/dev/net/tun', CgroupPermissions: 'rwm' }],
      },
    });
    // The preshared key goes in as a file of mode 0600, never as an argument or environment.
    await container.putArchive(
      archive([
        { path: PROGRAM, content: bundle, mode: 0o644 },
        { path: PSK_FILE, content: `${psk}\n`, mode: 0o600 },
      ]),
      { path: '/' },
    );
    await container.start();
    const info = await container.inspect();
    const underlay = info.NetworkSettings.Networks[network]?.IPAddress ?? '';
    const ready = await waitFor(
      `${name} to bring wg0 up`,
      async () => {
        const state = await container.inspect();
        if (!state.State.Running) {
          const logs = (await container.logs({ stdout: true, stderr: true })) as unknown as Buffer;
          throw new Error(`${name} exited: ${logs.toString('utf8')}`);
        }
        const text = await dockerRuntime().readFile(name, `${STATE_DIR}/ready.json`);
        return text ? (JSON.parse(text) as Ready) : undefined;
      },
      30_000,
    );
    return { container: name, underlay, tunnel, ready };
  }

  beforeAll(async () => {
    await requireNodeImage();
    await ensureTestImage();
    const bundle = await bundleNodeAgent(join(PROJECT_ROOT, 'test', 'fixtures', 'wireguard', 'main.ts'));
    await docker().createNetwork({ Name: network, Driver: 'bridge', Labels: TEST_LABEL });
    [a, b] = await Promise.all([
      start(`${network}-a`, '10.123.0.1', bundle),
      start(`${network}-b`, '10.123.0.2', bundle),
    ]);
    console.log(`a: ${JSON.stringify(a.ready)}\nb: ${JSON.stringify(b.ready)}`);
    // b listens and learns a's endpoint; a dials b and keeps the path open.
    peerOfA = { publicKey: a.ready.publicKey, presharedKeyFile: PSK_FILE, allowedIps: [`${a.tunnel}/32`] };
    peerOfB = {
      publicKey: b.ready.publicKey,
      presharedKeyFile: PSK_FILE,
      allowedIps: [`${b.tunnel}/32`],
      endpoint: `${b.underlay}:${PORT}`,
      persistentKeepalive: 25,
    };
  });

  afterAll(async () => {
    await removeLabelled(docker());
    await docker()
      .getNetwork(network)
      .remove()
      .catch(() => undefined);
  });

  it('brings up an interface with a key made in the container and the MTU of its underlay less 80', async () => {
    for (const side of [a, b]) {
      expect(side.ready.implementation).toMatch(/^(kernel|wireguard-go)$/);
      expect(side.ready.mtu).toBe(1420);
      expect((await dockerRuntime().readFile(side.container, '/sys/class/net/wg0/mtu'))?.trim()).toBe('1420');
      const keyMode = await dockerRuntime().exec(side.container, [
        'stat',
        '-c',
        '%a',
        `${STATE_DIR}/private.key`,
      ]);
      expect(keyMode.stdout.trim()).toBe('600');
      const state = await show(side);
      expect(state).toMatchObject({ publicKey: side.ready.publicKey, listenPort: PORT, peers: [] });
      // It says which implementation it took, and why.
      const logs = (await docker()
        .getContainer(side.container)
        .logs({ stdout: true, stderr: true })) as unknown as Buffer;
      const said = demuxBuffer(logs)
        .split('\n')
        .find((line) => line.startsWith('wg0: '));
      expect(said).toMatch(/^wg0: (the kernel's WireGuard|wireguard-go \(userspace\))/);
      if (side === a) console.log(said);
    }
  });

  it('makes a tunnel: a handshake, then a ping across', async () => {
    await program(b.container, ['peer', 'wg0', JSON.stringify(peerOfA)]);
    const dialled = Date.now();
    await program(a.container, ['peer', 'wg0', JSON.stringify(peerOfB)]);
    const handshake = JSON.parse(
      await program(a.container, ['handshake', 'wg0', b.ready.publicKey, '20000']),
    ) as PeerState;
    // Seen through `docker exec` of a Node program polling the dump: an upper bound.
    console.log(`handshake seen in a's dump ${Date.now() - dialled} ms after a was given its peer`);
    expect(handshake.latestHandshake).toBeDefined();

    const pinged = await ping(a, b.tunnel, 10);
    expect(pinged.exitCode, pinged.output).toBe(0);
    const rtt = roundTrip(pinged.output);
    const direct = roundTrip((await ping(a, b.underlay, 10)).output);
    console.log(
      `ping a -> b, min/avg/max: through the tunnel ${rtt.min}/${rtt.avg}/${rtt.max} ms, ` +
        `on the Docker network ${direct.min}/${direct.avg}/${direct.max} ms`,
    );
    expect(pinged.output).toContain('10 packets received');
  });

  it('reads the handshake, endpoints and counters from both dumps', async () => {
    const fromA = (await show(a)).peers;
    const fromB = (await show(b)).peers;
    expect(fromA).toHaveLength(1);
    expect(fromB).toHaveLength(1);
    expect(fromA[0]).toMatchObject({
      publicKey: b.ready.publicKey,
      hasPresharedKey: true,
      endpoint: `${b.underlay}:${PORT}`,
      allowedIps: [`${b.tunnel}/32`],
      persistentKeepalive: 25,
    });
    // b was given no endpoint: it learnt a's from the packets.
    expect(fromB[0]).toMatchObject({
      publicKey: a.ready.publicKey,
      hasPresharedKey: true,
      endpoint: `${a.underlay}:${PORT}`,
      allowedIps: [`${a.tunnel}/32`],
    });
    for (const peer of [...fromA, ...fromB]) {
      const seconds = (Date.now() - new Date(peer.latestHandshake ?? 0).getTime()) / 1000;
      expect(seconds).toBeLessThan(120);
      expect(peer.rxBytes).toBeGreaterThan(10 * 84);
      expect(peer.txBytes).toBeGreaterThan(10 * 84);
    }
  });

  it('a removed peer carries nothing; syncPeers puts it back', async () => {
    await program(a.container, ['remove', 'wg0', b.ready.publicKey]);
    expect((await show(a)).peers).toEqual([]);
    const refused = await ping(a, b.tunnel, 2);
    expect(refused.exitCode).not.toBe(0);

    await program(a.container, ['sync', 'wg0', JSON.stringify([peerOfB])]);
    expect((await show(a)).peers.map((p) => p.publicKey)).toEqual([b.ready.publicKey]);
    await program(a.container, ['handshake', 'wg0', b.ready.publicKey, '20000']);
    const again = await ping(a, b.tunnel, 3);
    expect(again.exitCode, again.output).toBe(0);
  });

  it('takes each side down on SIGTERM: the interface and wireguard-go are gone', async () => {
    for (const side of [a, b]) {
      const container = docker().getContainer(side.container);
      await container.stop({ t: 10 });
      const info = await container.inspect();
      const logs = ((await container.logs({ stdout: true, stderr: true })) as unknown as Buffer).toString(
        'utf8',
      );
      expect(info.State.ExitCode, logs).toBe(0);
      expect(logs).toContain('down wg0: interface removed');
    }
  });
});
