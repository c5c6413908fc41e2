// The engine broker: the one process of the image cache that holds the Docker socket and the user's
// Docker config. It listens on a unix socket that only root and the registry's group can open, and
// takes three operations on one image reference written in full (docker.io/library/x:1), and one
// on a cluster's host ports:
//
//   GET /inspect?reference=...   200 {"image": {...} | null}
//   GET /export?reference=...    200, the `docker save` tar stream
//   POST /pull?reference=...     204; the broker adds the registry credentials itself
//   PUT /host-ports?cluster=...  200 {"forwards": PublishedForward[]}, for the body
//                                {"forwards": HostPortForward[]}: the cluster's whole set (host-ports.ts)
//   POST /wake?cluster=...       200 PowerAnswer: wakes the cluster if it sleeps (cluster-power.ts)
//   POST /sleep?cluster=...      200 PowerAnswer: pauses the cluster, its front door's auto-sleep
//
// Anything else, any reference that does not read back as itself, and any host-port request that
// does not pass `checkForwards` is refused before Docker is asked. The registry, which parses what
// the network sends, reaches Docker only through here (`brokerSource`, `brokerHostPorts`).

import { chmod, chown, mkdir, rm } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { dirname } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream';
import {
  type HostPortForward,
  IMAGE_CACHE,
  type PowerAnswer,
  type PowerOperation,
  type PublishedForward,
} from '../../shared/contract.js';
import { parseImageReference, qualifiedReference } from '../../shared/image-reference.js';
import type { SleepEngine } from '../../shared/sleep.js';
import { log } from '../log.js';
import {
  createContainer,
  DOCKER_SOCKET,
  exportImage,
  type ImageInfo,
  inspectContainer,
  inspectImage,
  inspectNetwork,
  listContainers,
  pullImage,
  registryAuth,
  removeContainer,
  startContainer,
} from './engine.js';
import { ClusterPower, hostSleepEngine, PowerError } from './cluster-power.js';
import { checkClusterName, HostPortError, parseHostPortBody, readBody } from './host-port-spec.js';
import { type HostPortEngine, HostPorts } from './host-ports.js';
import type { ClusterPowerClient, HostPortPublisher, ImageSource } from './registry.js';

/** What the broker asks of Docker: images, and the containers that publish host ports. */
export interface Engine extends HostPortEngine {
  /** The same Docker, for sleep and wake. */
  sleep: SleepEngine;
  inspect(reference: string): Promise<ImageInfo | undefined>;
  export(reference: string): Promise<Readable>;
  pull(reference: string): Promise<void>;
}

/** The host's Docker on its socket, with the credentials of the user's Docker config for pulls. */
export function hostEngine(
  credentialSources: string[] = [IMAGE_CACHE.dockerConfig, IMAGE_CACHE.helperCredentials],
  socket = DOCKER_SOCKET,
): Engine {
  return {
    inspect: (reference) => inspectImage(reference, socket),
    export: (reference) => exportImage(reference, socket),
    pull: async (reference) => {
      const auth = await registryAuth(parseImageReference(reference).registry, ...credentialSources);
      await pullImage(reference, auth, socket);
    },
    inspectNetwork: (name) => inspectNetwork(name, socket),
    listContainers: (labels) => listContainers(labels, socket),
    inspectContainer: (id) => inspectContainer(id, socket),
    createContainer: (name, body) => createContainer(name, body, socket),
    startContainer: (id) => startContainer(id, socket),
    removeContainer: (id) => removeContainer(id, socket),
    sleep: hostSleepEngine(socket),
  };
}

type ImageOperation = 'inspect' | 'export' | 'pull';
type ClusterOperation = 'host-ports' | PowerOperation;
type Operation = ImageOperation | ClusterOperation;

const OPERATIONS: Record<string, Operation> = {
  'GET /inspect': 'inspect',
  'GET /export': 'export',
  'POST /pull': 'pull',
  'PUT /host-ports': 'host-ports',
  'POST /wake': 'wake',
  'POST /sleep': 'sleep',
};

const CLUSTER_OPERATIONS: readonly Operation[] = ['host-ports', 'wake', 'sleep'];

export type BrokerAsk =
  { operation: ImageOperation; reference: string } | { operation: ClusterOperation; cluster: string };

export class BrokerError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** A reference the broker forwards: printable, short, valid, and written in full. */
export function brokerReference(text: string): string {
  if (text.length > 512 || !/^[\x21-\x7e]+$/.test(text)) {
    throw new BrokerError(400, 'the reference is not a short printable image reference');
  }
  let full: string;
  try {
    full = qualifiedReference(text);
  } catch (error) {
    throw new BrokerError(400, (error as Error).message);
  }
  if (full !== text) throw new BrokerError(400, `"${text}" is not written in full (${full})`);
  return text;
}

/** A cluster's name as the broker takes it: a DNS label of at most 32 characters. */
export function brokerCluster(text: string): string {
  try {
    return checkClusterName(text);
  } catch (error) {
    throw new BrokerError(400, (error as Error).message);
  }
}

/** One operation on one reference or cluster, or a refusal; nothing here has touched Docker yet. */
export function brokerRequest(method: string | undefined, url: string | undefined): BrokerAsk {
  const raw = url ?? '/';
  const question = raw.indexOf('?');
  const path = question >= 0 ? raw.slice(0, question) : raw;
  const operation = OPERATIONS[`${method} ${path}`];
  if (!operation) {
    throw new BrokerError(
      404,
      `no operation ${method} ${path}: the broker takes GET /inspect, GET /export, POST /pull, PUT /host-ports, POST /wake and POST /sleep`,
    );
  }
  const params = new URLSearchParams(question >= 0 ? raw.slice(question + 1) : '');
  const keys = [...params.keys()];
  const forCluster = CLUSTER_OPERATIONS.includes(operation);
  const wanted = forCluster ? 'cluster' : 'reference';
  if (keys.length !== 1 || keys[0] !== wanted) {
    throw new BrokerError(400, `${path} takes one parameter, ${wanted}`);
  }
  if (forCluster) {
    return { operation: operation as ClusterOperation, cluster: brokerCluster(params.get('cluster')!) };
  }
  return { operation: operation as ImageOperation, reference: brokerReference(params.get('reference')!) };
}

function reply(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

/** Checks the body again (the broker trusts no caller), then reconciles the cluster's forwarders. */
async function handleHostPorts(
  hostPorts: HostPorts,
  cluster: string,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  let forwards: HostPortForward[];
  try {
    forwards = parseHostPortBody(await readBody(req));
  } catch (error) {
    log(`broker: refused host ports of ${cluster}: ${(error as Error).message}`);
    if (!req.complete) res.setHeader('Connection', 'close');
    reply(res, 400, { message: (error as Error).message });
    return;
  }
  try {
    reply(res, 200, { forwards: await hostPorts.publish(cluster, forwards) });
  } catch (error) {
    const status = error instanceof HostPortError ? error.status : 502;
    const message = ((error as Error).message ?? String(error)).split('\n')[0]!;
    log(`broker: host ports of ${cluster}: ${message}`);
    reply(res, status, { message });
  }
}

async function handlePower(
  power: ClusterPower,
  operation: PowerOperation,
  cluster: string,
  res: ServerResponse,
): Promise<void> {
  try {
    reply(res, 200, await power.run(operation, cluster));
  } catch (error) {
    const status = error instanceof PowerError ? error.status : 502;
    const message = ((error as Error).message ?? String(error)).split('\n')[0]!;
    log(`broker: ${operation} of ${cluster}: ${message}`);
    reply(res, status, { message });
  }
}

async function handle(
  engine: Engine,
  hostPorts: HostPorts,
  power: ClusterPower,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  let asked: BrokerAsk;
  try {
    asked = brokerRequest(req.method, req.url);
  } catch (error) {
    req.resume();
    const status = error instanceof BrokerError ? error.status : 400;
    log(`broker: refused ${req.method} ${(req.url ?? '').slice(0, 200)}: ${(error as Error).message}`);
    reply(res, status, { message: (error as Error).message });
    return;
  }
  if ('cluster' in asked) {
    if (asked.operation === 'host-ports') {
      await handleHostPorts(hostPorts, asked.cluster, req, res);
    } else {
      req.resume();
      await handlePower(power, asked.operation, asked.cluster, res);
    }
    return;
  }
  req.resume();
  const { operation, reference } = asked;
  try {
    if (operation === 'inspect') {
      reply(res, 200, { image: (await engine.inspect(reference)) ?? null });
    } else if (operation === 'export') {
      const archive = await engine.export(reference);
      res.writeHead(200, { 'Content-Type': 'application/x-tar' });
      // Cut short, the response ends without its last chunk: the registry's import fails, not a half image.
      pipeline(archive, res, (error) => {
        if (error) res.destroy();
      });
    } else {
      await engine.pull(reference);
      res.writeHead(204);
      res.end();
    }
  } catch (error) {
    if (res.headersSent) res.destroy();
    else reply(res, 502, { message: (error as Error).message });
  }
}

/**
 * Listens on `socketPath`: the folder and the socket belong to root and `gid`, mode 0750 and 0660,
 * so root and that group alone can connect. Forwarders run the image of the broker's own container
 * unless `ownImage` says otherwise.
 */
export async function startBroker(
  socketPath: string,
  engine: Engine,
  options: { gid?: number; ownImage?: () => Promise<string> } = {},
): Promise<Server> {
  const dir = dirname(socketPath);
  await mkdir(dir, { recursive: true, mode: 0o750 });
  await chmod(dir, 0o750);
  if (options.gid !== undefined) await chown(dir, 0, options.gid);
  await rm(socketPath, { force: true });
  const hostPorts = new HostPorts(engine, options.ownImage, (cluster, changes) =>
    log(`host ports of ${cluster}: ${changes.join(', ')}`),
  );
  const power = new ClusterPower(engine.sleep, (cluster, text) => log(`${cluster}: ${text}`));
  const server = createServer((req, res) => {
    void handle(engine, hostPorts, power, req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => {
      server.off('error', reject);
      resolve();
    });
  });
  await chmod(socketPath, 0o660);
  if (options.gid !== undefined) await chown(socketPath, 0, options.gid);
  return server;
}

// ---- the registry's side ----

function call(socketPath: string, method: string, operation: ImageOperation, reference: string) {
  return new Promise<IncomingMessage>((resolve, reject) => {
    const path = `/${operation}?reference=${encodeURIComponent(reference)}`;
    const req = request({ socketPath, method, path }, resolve);
    req.on('error', reject);
    req.end();
  });
}

async function bodyOf(response: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** The broker's one-line message of a refusal. */
function messageOf(text: string): string {
  let message = text.trim();
  try {
    message = (JSON.parse(text) as { message?: string }).message ?? message;
  } catch {
    // not JSON: the text as it came
  }
  return message;
}

async function failure(response: IncomingMessage, operation: string, subject: string): Promise<Error> {
  const message = messageOf(await bodyOf(response));
  return new Error(message || `${operation} ${subject}: status ${response.statusCode}`);
}

/** The host's Docker as the registry reaches it: through the broker on its unix socket. */
export function brokerSource(socketPath: string): ImageSource {
  return {
    async inspect(reference) {
      const response = await call(socketPath, 'GET', 'inspect', reference);
      if (response.statusCode !== 200) throw await failure(response, 'inspect', reference);
      const body = JSON.parse(await bodyOf(response)) as { image: ImageInfo | null };
      return body.image ?? undefined;
    },
    async export(reference) {
      const response = await call(socketPath, 'GET', 'export', reference);
      if (response.statusCode !== 200) throw await failure(response, 'export', reference);
      return response;
    },
    async pull(reference) {
      const response = await call(socketPath, 'POST', 'pull', reference);
      if (response.statusCode !== 204) throw await failure(response, 'pull', reference);
      response.resume();
    },
  };
}

/**
 * A cluster's host ports as the registry reaches them: through the broker on its unix socket. A
 * refusal of the broker is a HostPortError with the broker's status.
 */
export function brokerHostPorts(socketPath: string): HostPortPublisher {
  return {
    async publish(cluster, forwards) {
      const body = JSON.stringify({ forwards });
      const response = await new Promise<IncomingMessage>((resolve, reject) => {
        const req = request(
          {
            socketPath,
            method: 'PUT',
            path: `/host-ports?cluster=${encodeURIComponent(cluster)}`,
            headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
          },
          resolve,
        );
        req.on('error', reject);
        req.end(body);
      });
      const text = await bodyOf(response);
      if (response.statusCode !== 200) {
        throw new HostPortError(
          response.statusCode ?? 502,
          messageOf(text) || `host ports of ${cluster}: status ${response.statusCode}`,
        );
      }
      return (JSON.parse(text) as { forwards: PublishedForward[] }).forwards;
    },
  };
}

/** Wake and auto-sleep as the registry reaches them: through the broker on its unix socket. */
export function brokerPower(socketPath: string): ClusterPowerClient {
  return {
    async run(operation, cluster) {
      const response = await new Promise<IncomingMessage>((resolve, reject) => {
        const req = request(
          { socketPath, method: 'POST', path: `/${operation}?cluster=${encodeURIComponent(cluster)}` },
          resolve,
        );
        req.on('error', reject);
        req.end();
      });
      const text = await bodyOf(response);
      if (response.statusCode !== 200) {
        throw new PowerError(
          response.statusCode ?? 502,
          messageOf(text) || `${operation} of ${cluster}: status ${response.statusCode}`,
        );
      }
      return JSON.parse(text) as PowerAnswer;
    },
  };
}
