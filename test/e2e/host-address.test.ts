// A brand-new Docker engine lists no gateway for its default bridge, and neither does any network
// created with a subnet but no gateway. Services the tests start on the host must still be found
// and reached from containers there; this network reproduces such an engine on any machine.

import { createServer, type Server } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dockerRuntime } from '../../cli/runtime/docker-runtime.js';
import { pickClusterSubnet } from '../../shared/subnets.js';
import { docker, LABEL_CLUSTER, NODE_IMAGE, removeByLabel, requireNodeImage, uniqueName } from './helpers.js';

const owner = uniqueName('e2e-gw');
const network = `vind-${owner}`;
const servers: Server[] = [];

function listen(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer((socket) => socket.end('hello from the host\n'));
    servers.push(server);
    server.once('error', reject);
    // Binding proves the address is the host's own: a foreign one fails with EADDRNOTAVAIL.
    server.listen(0, address, () => resolve((server.address() as { port: number }).port));
  });
}

/** Connects from a fresh container on `onNetwork` and returns what the server said. */
async function readFromContainer(onNetwork: string, address: string, port: number): Promise<string> {
  const script =
    `const s = require('net').connect(${port}, '${address}');` +
    `s.on('data', (d) => process.stdout.write(d)); s.on('error', (e) => { console.error(e.message); process.exit(1); });`;
  const container = await docker().createContainer({
    Image: NODE_IMAGE,
    Entrypoint: ['node', '-e', script],
    Labels: { [LABEL_CLUSTER]: owner },
    HostConfig: { NetworkMode: onNetwork },
  });
  try {
    const output = new Promise<string>((resolve) => {
      void container.attach({ stream: true, stdout: true, stderr: true }).then((stream) => {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      });
    });
    await container.start();
    const exit = (await container.wait()) as { StatusCode: number };
    const text = await output;
    expect(exit.StatusCode, text).toBe(0);
    return text;
  } finally {
    await container.remove({ force: true });
  }
}

describe('the host address on a bridge network that reports no gateway', () => {
  beforeAll(async () => {
    await requireNodeImage();
    const subnet = pickClusterSubnet(await dockerRuntime().usedSubnets());
    await docker().createNetwork({
      Name: network,
      Driver: 'bridge',
      Labels: { [LABEL_CLUSTER]: owner },
      IPAM: { Driver: 'default', Config: [{ Subnet: subnet }] },
    });
  });

  afterAll(async () => {
    for (const server of servers) server.close();
    await removeByLabel(owner);
  });

  it('is found, and containers on that network reach a service listening there', async () => {
    const inspected = await docker().getNetwork(network).inspect();
    // The condition of a fresh engine: a subnet and no gateway listed.
    expect(inspected.IPAM?.Config?.[0]?.Gateway ?? '').toBe('');
    const address = await dockerRuntime().hostAddressOn(network);
    const port = await listen(address);
    expect(await readFromContainer(network, address, port)).toContain('hello from the host');
  });

  it("is found for Docker's default bridge whether or not this engine lists its gateway", async () => {
    const address = await dockerRuntime().hostAddressOn('bridge');
    const port = await listen(address);
    // Where datastore servers of the tests listen: reached from a container on another network.
    expect(await readFromContainer(network, address, port)).toContain('hello from the host');
  });
});
