// The `host-port` forwarder against real loopback sockets: echo servers stand for a LoadBalancer
// address, the forwarder listens on free ports of 127.0.0.1 instead of the Service's own.

import { randomBytes } from 'node:crypto';
import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import { connect, createServer, type Server } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Forwarder, parseHostPortArgs, startForwarder } from '../../node-agent/host-port.js';

/** Listens on a free port of 127.0.0.1. */
async function tcpServer(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return (server.address() as { port: number }).port;
}

/** Sends `data`, ends its side, and reads until the other side ends too. */
function exchange(port: number, data: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('end', () => resolve(Buffer.concat(chunks)));
    socket.on('error', reject);
    socket.end(data);
  });
}

function udpEcho(): Promise<{ socket: UdpSocket; port: number; senders: Set<number> }> {
  const socket = createSocket('udp4');
  const senders = new Set<number>();
  socket.on('message', (message, from) => {
    senders.add(from.port);
    socket.send(Buffer.concat([Buffer.from('echo '), message]), from.port, from.address);
  });
  return new Promise((resolve) =>
    socket.bind(0, '127.0.0.1', () => resolve({ socket, port: socket.address().port, senders })),
  );
}

/** Sends one datagram from a socket and waits for the next that comes back. */
function ask(client: UdpSocket, port: number, text: string): Promise<{ text: string; from: RemoteInfo }> {
  return new Promise((resolve) => {
    client.once('message', (message, from) => resolve({ text: message.toString(), from }));
    client.send(text, port, '127.0.0.1');
  });
}

describe('the host-port forwarder', () => {
  let tcpEcho: Server;
  let tcpPort: number;
  let refusedPort: number;
  let udp: Awaited<ReturnType<typeof udpEcho>>;
  let forwarder: Forwarder;
  const listening = (port: number, protocol: 'TCP' | 'UDP') =>
    forwarder.listeners.find((l) => l.port === port && l.protocol === protocol)!.listening;

  beforeAll(async () => {
    // Answers only once the client has ended its side: a proxy that is not half-close aware hangs here.
    tcpEcho = createServer({ allowHalfOpen: true }, (socket) => {
      const chunks: Buffer[] = [];
      socket.on('data', (chunk: Buffer) => chunks.push(chunk));
      socket.on('end', () => socket.end(Buffer.concat(chunks)));
    });
    tcpPort = await tcpServer(tcpEcho);
    // A port nothing listens on: taken, then given back.
    const closed = createServer();
    refusedPort = await tcpServer(closed);
    await new Promise((resolve) => closed.close(resolve));
    udp = await udpEcho();
    forwarder = await startForwarder(
      {
        address: '127.0.0.1',
        ports: [
          { port: tcpPort, protocol: 'TCP' },
          { port: udp.port, protocol: 'UDP' },
          { port: refusedPort, protocol: 'TCP' },
        ],
      },
      { listenHost: '127.0.0.1', listenPort: () => 0, udpIdleMs: 500 },
    );
  });
  afterAll(async () => {
    await forwarder.close();
    tcpEcho.close();
    udp.socket.close();
  });

  it('listens on one port per port and protocol', () => {
    expect(forwarder.listeners.map((l) => [l.port, l.protocol])).toEqual([
      [tcpPort, 'TCP'],
      [udp.port, 'UDP'],
      [refusedPort, 'TCP'],
    ]);
    for (const l of forwarder.listeners) expect(l.listening).toBeGreaterThan(0);
  });

  it('passes a TCP connection through both ways, its end included', async () => {
    expect((await exchange(listening(tcpPort, 'TCP'), Buffer.from('hello'))).toString()).toBe('hello');
  });

  it('passes 1 MB through whole', async () => {
    const payload = randomBytes(1024 * 1024);
    const back = await exchange(listening(tcpPort, 'TCP'), payload);
    expect(back.length).toBe(payload.length);
    expect(back.equals(payload)).toBe(true);
  });

  it('carries several connections at once', async () => {
    const answers = await Promise.all(
      ['a', 'b', 'c'].map((text) => exchange(listening(tcpPort, 'TCP'), Buffer.from(text.repeat(10_000)))),
    );
    expect(answers.map((a) => a.toString())).toEqual(['a', 'b', 'c'].map((t) => t.repeat(10_000)));
  });

  it('closes a connection whose address refuses it', async () => {
    const outcome = await new Promise<string>((resolve) => {
      const socket = connect({ host: '127.0.0.1', port: listening(refusedPort, 'TCP') });
      socket.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? 'error'));
      socket.on('end', () => resolve('end'));
      socket.resume();
    });
    expect(['ECONNRESET', 'end']).toContain(outcome);
  });

  describe('UDP', () => {
    const clients: UdpSocket[] = [];
    const client = async () => {
      const socket = createSocket('udp4');
      await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
      clients.push(socket);
      return socket;
    };
    afterEach(() => {
      for (const socket of clients.splice(0)) socket.close();
    });

    it('answers each of two clients with its own replies, through its own session', async () => {
      const [one, two] = [await client(), await client()];
      const port = listening(udp.port, 'UDP');
      udp.senders.clear();
      const [a, b] = await Promise.all([ask(one, port, 'one'), ask(two, port, 'two')]);
      expect(a.text).toBe('echo one');
      expect(b.text).toBe('echo two');
      // The replies come from the forwarder's port, as a client expects.
      expect(a.from.port).toBe(port);
      expect((await ask(one, port, 'one again')).text).toBe('echo one again');
      expect((await ask(two, port, 'two again')).text).toBe('echo two again');
      // One upstream socket per client, kept while it is in use.
      expect(udp.senders.size).toBe(2);
    });

    it('closes a session left idle; the next datagram opens another', async () => {
      const one = await client();
      const port = listening(udp.port, 'UDP');
      udp.senders.clear();
      await ask(one, port, 'first');
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      expect((await ask(one, port, 'after a pause')).text).toBe('echo after a pause');
      expect(udp.senders.size).toBe(2);
    });
  });
});

describe('the forwarder’s arguments', () => {
  it('reads an address and its ports', () => {
    expect(parseHostPortArgs(['172.30.0.128', '80/TCP', '53/UDP'])).toEqual({
      address: '172.30.0.128',
      ports: [
        { port: 80, protocol: 'TCP' },
        { port: 53, protocol: 'UDP' },
      ],
    });
  });

  it.each([
    [[], /address undefined is not a dotted IPv4 address/],
    [['172.30.0.128'], /ports lists 0 ports: use 1 to 64/],
    [['web', '80/TCP'], /address "web" is not a dotted IPv4 address/],
    [['172.30.0.128', '80'], /"80" is not a PORT\/PROTOCOL/],
    [['172.30.0.128', '80/tcp'], /"80\/tcp" is not a PORT\/PROTOCOL/],
    [['172.30.0.128', '70000/TCP'], /port 70000 is not a port/],
    [['172.30.0.128', '80/TCP', '80/TCP'], /80\/TCP is listed twice/],
  ])('refuses %j', (args, message) => {
    expect(() => parseHostPortArgs(args)).toThrow(message);
    expect(() => parseHostPortArgs(args)).toThrow(/use host-port ADDRESS PORT\/PROTOCOL/);
  });
});
