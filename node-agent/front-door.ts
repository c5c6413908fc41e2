// Role `front-door`: the container that holds a cluster's API port on the host (127.0.0.1) and
// passes every connection to the API server, byte for byte (TLS goes through untouched). It is what
// makes sleep invisible:
//
//   wake on demand  a connection, or a byte on an open one, while the API server has been quiet
//                   asks the image cache to wake the cluster (POST WAKE_PATH with the cluster's
//                   token; the cache's engine broker does the Docker work). The client's bytes wait
//                   meanwhile, and after a wake from stop or checkpoint until /readyz answers, so a
//                   plain `kubectl get` is answered, not refused. A request that the API server does
//                   not answer within STALL_MS asks again: the cluster may have been put to sleep
//                   while the connection was open.
//   auto-sleep      after `sleepAfterMs` without a byte from or to a client, it asks the cache to
//                   pause the cluster (POST SLEEP_PATH). The cluster's own components talk to the API
//                   server on the cluster network, not through here: they do not keep it awake.
//
// It runs as an unprivileged user with no capability, a read-only root and no socket; the front door
// is not put to sleep with the cluster.

import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { Transform } from 'node:stream';
import {
  decodeFrontDoorEnv,
  IMAGE_CACHE,
  type PowerAnswer,
  type PowerOperation,
  SLEEP_PATH,
  WAKE_PATH,
} from '../shared/contract.js';
import { log } from './log.js';

/** The API server sent something (or the cache said it is awake) this recently: no need to ask. */
export const QUIET_MS = 5_000;
/** Bytes sent and nothing back for this long: ask whether the cluster sleeps. */
export const STALL_MS = 1_500;

export interface FrontDoorOptions {
  listenPort: number;
  listenHost?: string;
  upstream: { host: string; port: number };
  /** Asks for a wake or a pause of the cluster. */
  power(operation: PowerOperation): Promise<PowerAnswer>;
  sleepAfterMs: number;
  /** How long a client may wait for the cluster to wake and answer; default 90 s. */
  wakeTimeoutMs?: number;
  /** How often the idle time is looked at; default a tenth of it, between 250 ms and 10 s. */
  idleCheckMs?: number;
  /** Whether the API server is ready (a wake from stop waits for it); default GET /readyz. */
  upstreamReady?(): Promise<boolean>;
  report?(text: string): void;
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** GET /readyz over TLS, not verified: it sends no secret, and only its status counts. */
export function readyzProbe(host: string, port: number): () => Promise<boolean> {
  return () =>
    new Promise((resolve) => {
      const req = httpsRequest(
        { host, port, path: '/readyz', rejectUnauthorized: false, timeout: 1_000 },
        (res) => {
          res.resume();
          resolve(res.statusCode === 200);
        },
      );
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(false));
      req.end();
    });
}

export class FrontDoor {
  private server?: Server;
  private readonly open = new Set<Socket>();
  private lastActivity = Date.now();
  /** The last byte from the API server, or the last answer about a wake: it was awake then. */
  private lastSignOfLife = 0;
  private waking?: Promise<void>;
  private asleep = false;
  private timer?: NodeJS.Timeout;
  /** Connections and wakes since the start, for the log and tests. */
  readonly counts = { connections: 0, wakes: 0, sleeps: 0 };

  constructor(private readonly options: FrontDoorOptions) {}

  private report(text: string): void {
    (this.options.report ?? ((t: string) => log(`front door: ${t}`)))(text);
  }

  private activity(): void {
    this.lastActivity = Date.now();
    this.asleep = false;
  }

  /**
   * Makes sure the cluster is awake before a client's bytes go on: unless the API server answered
   * lately (or `force`), asks the cache; one question at a time for every connection.
   */
  private ensureAwake(force = false): Promise<void> {
    if (!force && Date.now() - this.lastSignOfLife < QUIET_MS) return Promise.resolve();
    this.waking ??= this.wake().finally(() => {
      this.waking = undefined;
      this.lastSignOfLife = Date.now();
    });
    return this.waking;
  }

  private async wake(): Promise<void> {
    const started = Date.now();
    let answer: PowerAnswer;
    try {
      answer = await this.options.power('wake');
    } catch (error) {
      // Without the cache the connection still goes through: an awake cluster answers anyway.
      this.report(`could not ask for a wake: ${(error as Error).message}`);
      return;
    }
    if (answer.state !== 'woke') return;
    this.counts.wakes++;
    if (answer.from !== 'pause') await this.untilReady(started);
    this.report(`woke the cluster from ${answer.from} for a client in ${Date.now() - started}ms`);
  }

  private async untilReady(started: number): Promise<void> {
    const ready =
      this.options.upstreamReady ?? readyzProbe(this.options.upstream.host, this.options.upstream.port);
    const deadline = started + (this.options.wakeTimeoutMs ?? 90_000);
    while (Date.now() < deadline) {
      if (await ready()) return;
      await delay(100);
    }
  }

  /** A connection to the API server, tried again while it refuses (a control plane starting). */
  private async connectUpstream(): Promise<Socket> {
    const deadline = Date.now() + (this.options.wakeTimeoutMs ?? 90_000);
    for (;;) {
      try {
        return await new Promise<Socket>((resolve, reject) => {
          const socket = connect({ ...this.options.upstream, allowHalfOpen: true });
          socket.once('connect', () => {
            socket.off('error', reject);
            resolve(socket);
          });
          socket.once('error', reject);
        });
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await delay(200);
      }
    }
  }

  private handle(client: Socket): void {
    this.counts.connections++;
    this.activity();
    this.open.add(client);
    client.on('close', () => this.open.delete(client));
    client.on('error', () => client.destroy());
    client.pause();
    void (async () => {
      await this.ensureAwake();
      const upstream = await this.connectUpstream();
      this.open.add(upstream);
      upstream.on('close', () => this.open.delete(upstream));
      if (client.destroyed) {
        upstream.destroy();
        return;
      }
      this.wire(client, upstream);
    })().catch((error: Error) => {
      this.report(`a client's connection failed: ${error.message}`);
      client.destroy();
    });
  }

  /** Both directions, counting activity; a client's bytes wait for a wake when the server was quiet. */
  private wire(client: Socket, upstream: Socket): void {
    let stall: NodeJS.Timeout | undefined;
    const gate = new Transform({
      transform: (chunk: Buffer, _encoding, done) => {
        this.activity();
        this.ensureAwake().then(
          () => {
            // Nothing back in a while: the cluster may have gone to sleep under this connection.
            stall ??= setTimeout(() => {
              stall = undefined;
              void this.ensureAwake(true);
            }, STALL_MS);
            done(null, chunk);
          },
          (error: Error) => done(error),
        );
      },
    });
    upstream.on('data', () => {
      this.lastSignOfLife = Date.now();
      this.activity();
      clearTimeout(stall);
      stall = undefined;
    });
    client.pipe(gate).pipe(upstream);
    upstream.pipe(client);
    const reset = () => {
      clearTimeout(stall);
      client.resetAndDestroy();
      upstream.resetAndDestroy();
    };
    client.on('error', reset);
    upstream.on('error', reset);
    gate.on('error', reset);
    upstream.on('close', () => clearTimeout(stall));
    client.resume();
  }

  private async checkIdle(): Promise<void> {
    const { sleepAfterMs } = this.options;
    if (sleepAfterMs <= 0 || this.asleep || Date.now() - this.lastActivity < sleepAfterMs) return;
    try {
      const answer = await this.options.power('sleep');
      this.asleep = true;
      if (answer.state === 'slept') {
        this.counts.sleeps++;
        this.report(`paused the cluster after ${Math.round(sleepAfterMs / 1000)}s without a client`);
      }
    } catch (error) {
      // Stopped or paused behind vind's back, or the cache is away: look again after another idle time.
      this.report(`could not put the cluster to sleep: ${(error as Error).message}`);
      this.lastActivity = Date.now();
    }
  }

  async listen(): Promise<number> {
    const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) =>
      this.handle(client),
    );
    this.server = server;
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.listenPort, this.options.listenHost ?? '0.0.0.0', () => {
        server.off('error', reject);
        const address = server.address();
        resolve(typeof address === 'object' && address ? address.port : this.options.listenPort);
      });
    });
    const { sleepAfterMs } = this.options;
    if (sleepAfterMs > 0) {
      const every = this.options.idleCheckMs ?? Math.min(10_000, Math.max(250, sleepAfterMs / 10));
      this.timer = setInterval(() => void this.checkIdle(), every);
    }
    return port;
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    const closed = new Promise<void>((resolve) =>
      this.server ? this.server.close(() => resolve()) : resolve(),
    );
    for (const socket of this.open) socket.destroy();
    await closed;
  }
}

/** Asks the image cache, with the cluster's token, to wake or pause the cluster. */
export function cachePower(
  imageCache: string,
  token: string,
): (operation: PowerOperation) => Promise<PowerAnswer> {
  return (operation) =>
    new Promise((resolve, reject) => {
      const url = new URL(operation === 'wake' ? WAKE_PATH : SLEEP_PATH, imageCache);
      const req = httpRequest(
        url,
        { method: 'POST', headers: { [IMAGE_CACHE.tokenHeader]: token }, timeout: 60_000 },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            try {
              const body = JSON.parse(text) as PowerAnswer & { message?: string };
              if (res.statusCode === 200) resolve(body);
              else reject(new Error(body.message ?? `status ${res.statusCode}`));
            } catch {
              reject(new Error(`status ${res.statusCode}: ${text.slice(0, 200)}`));
            }
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error('the image cache did not answer in 60 s')));
      req.on('error', reject);
      req.end();
    });
}

export async function runFrontDoor(): Promise<void> {
  if (process.getuid?.() === 0) {
    throw new Error('the front door does not run as root: vind starts it as an unprivileged user');
  }
  const settings = decodeFrontDoorEnv(process.env);
  const door = new FrontDoor({
    listenPort: settings.upstream.port,
    upstream: settings.upstream,
    power: cachePower(settings.imageCache, settings.imageCacheToken),
    sleepAfterMs: settings.sleepAfterMs,
  });
  await door.listen();
  const idle =
    settings.sleepAfterMs > 0 ? `auto-sleep after ${settings.sleepAfterMs / 1000}s idle` : 'no auto-sleep';
  log(
    `front door of ${settings.cluster} on :${settings.upstream.port} to ${settings.upstream.host}:${settings.upstream.port}, ${idle}`,
  );
}
