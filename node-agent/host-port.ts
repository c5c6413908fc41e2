// Role `host-port`: the forwarder the image cache starts for one LoadBalancer address
// (image-cache/host-ports.ts). It listens on every given port of its own container, which Docker
// publishes on the host's 127.0.0.1, and passes what arrives to the address on the cluster network:
// TCP connection by connection, UDP per client address and port. It runs as an unprivileged user
// with no capability and a read-only root; it writes no status file and supervises nothing.

import { createSocket, type RemoteInfo, type Socket as UdpSocket } from 'node:dgram';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { HostPortForward, PortProtocol } from '../shared/contract.js';
import { checkForwards } from './image-cache/host-port-spec.js';
import { log } from './log.js';

/** A UDP client that sends nothing and hears nothing for this long is forgotten. */
export const UDP_IDLE_MS = 60_000;
/** Clients followed at once per UDP port; past it the longest-known one is forgotten. */
const MAX_UDP_SESSIONS = 1024;

export interface ForwarderOptions {
  /** Where every port listens: all addresses of the container. */
  listenHost?: string;
  /** The port to listen on for a port of the address: the same one, unless a test wants any free one. */
  listenPort?: (port: number) => number;
  udpIdleMs?: number;
}

export interface Listener {
  port: number;
  protocol: PortProtocol;
  /** The port it listens on. */
  listening: number;
}

export interface Forwarder {
  listeners: Listener[];
  /** Stops listening and ends every connection and UDP session. */
  close(): Promise<void>;
}

/** `host-port ADDRESS 80/TCP 53/UDP ...`, checked as the broker checks a request. */
export function parseHostPortArgs(args: string[]): HostPortForward {
  const [address, ...ports] = args;
  const usage = 'use host-port ADDRESS PORT/PROTOCOL..., e.g. host-port 172.30.0.128 80/TCP 53/UDP';
  const parsed = ports.map((text) => {
    const match = /^(\d{1,5})\/(TCP|UDP)$/.exec(text);
    if (!match) throw new Error(`"${text}" is not a PORT/PROTOCOL: ${usage}`);
    return { port: Number(match[1]), protocol: match[2] as PortProtocol };
  });
  try {
    return checkForwards([{ address, ports: parsed }])[0]!;
  } catch (error) {
    throw new Error(`${(error as Error).message.replace(/^forwards\[0\]\.?/, '')}: ${usage}`, {
      cause: error,
    });
  }
}

function listenTcp(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : port);
    });
  });
}

/** Each connection to the listener is one connection to address:port, byte for byte, both ways. */
async function forwardTcp(
  address: string,
  port: number,
  host: string,
  listenPort: number,
): Promise<{ listening: number; close(): Promise<void> }> {
  const open = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (client) => {
    const upstream = connect({ host: address, port, allowHalfOpen: true });
    open.add(client).add(upstream);
    // Each side's end (FIN) is passed on once all before it is written; the other direction goes
    // on until it ends too, and a socket that has both ended closes itself.
    client.pipe(upstream);
    upstream.pipe(client);
    // A reset, or an address that refuses, resets the other side: nothing is left half open.
    client.on('error', () => upstream.resetAndDestroy());
    upstream.on('error', () => client.resetAndDestroy());
    client.on('close', () => open.delete(client));
    upstream.on('close', () => open.delete(upstream));
  });
  const listening = await listenTcp(server, listenPort, host);
  return {
    listening,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of open) socket.destroy();
      await closed;
    },
  };
}

interface UdpSession {
  upstream: UdpSocket;
  timer: NodeJS.Timeout;
  end(): void;
}

/**
 * Each client (address and port) gets its own socket towards address:port, so the replies that
 * come back on it go to that client alone; a session idle for `idleMs` is closed.
 */
async function forwardUdp(
  address: string,
  port: number,
  host: string,
  listenPort: number,
  idleMs: number,
): Promise<{ listening: number; close(): Promise<void> }> {
  const socket = createSocket('udp4');
  const sessions = new Map<string, UdpSession>();
  const open = (client: RemoteInfo): UdpSession => {
    const key = `${client.address}:${client.port}`;
    const known = sessions.get(key);
    if (known) return known;
    if (sessions.size >= MAX_UDP_SESSIONS) sessions.values().next().value?.end();
    const upstream = createSocket('udp4');
    let ended = false;
    const session: UdpSession = {
      upstream,
      timer: setTimeout(() => session.end(), idleMs),
      end: () => {
        if (ended) return;
        ended = true;
        clearTimeout(session.timer);
        sessions.delete(key);
        upstream.close();
      },
    };
    upstream.on('message', (reply, from) => {
      if (from.address !== address || from.port !== port) return; // not the address's answer
      session.timer.refresh();
      socket.send(reply, client.port, client.address);
    });
    upstream.on('error', () => session.end());
    sessions.set(key, session);
    return session;
  };
  socket.on('message', (message, client) => {
    const session = open(client);
    session.timer.refresh();
    session.upstream.send(message, port, address);
  });
  socket.on('error', (error) => log(`host-port: UDP ${port}: ${error.message}`));
  const listening = await new Promise<number>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(listenPort, host, () => {
      socket.off('error', reject);
      resolve(socket.address().port);
    });
  });
  return {
    listening,
    close: async () => {
      for (const session of [...sessions.values()]) session.end();
      await new Promise<void>((resolve) => socket.close(() => resolve()));
    },
  };
}

/** Listens on every port of a forward and passes what comes to the forward's address. */
export async function startForwarder(
  forward: HostPortForward,
  options: ForwarderOptions = {},
): Promise<Forwarder> {
  const host = options.listenHost ?? '0.0.0.0';
  const listenPort = options.listenPort ?? ((port: number) => port);
  const idleMs = options.udpIdleMs ?? UDP_IDLE_MS;
  const listeners: Listener[] = [];
  const closers: (() => Promise<void>)[] = [];
  const close = async () => {
    await Promise.all(closers.map((c) => c()));
  };
  try {
    for (const { port, protocol } of forward.ports) {
      const { listening, close: stop } =
        protocol === 'TCP'
          ? await forwardTcp(forward.address, port, host, listenPort(port))
          : await forwardUdp(forward.address, port, host, listenPort(port), idleMs);
      closers.push(stop);
      listeners.push({ port, protocol, listening });
      log(`host-port: ${host}:${listening}/${protocol} to ${forward.address}:${port}`);
    }
  } catch (error) {
    await close();
    throw error;
  }
  return { listeners, close };
}

/** The role itself, from the container command's arguments. */
export async function runHostPort(args: string[]): Promise<void> {
  if (process.getuid?.() === 0) {
    throw new Error('the forwarder does not run as root: the image cache starts it as an unprivileged user');
  }
  await startForwarder(parseHostPortArgs(args));
}
