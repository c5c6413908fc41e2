// The engine broker: the one process of the image cache that holds the Docker socket and the user's
// Docker config. It listens on a unix socket that only root and the registry's group can open, and
// takes three operations, each on one image reference written in full (docker.io/library/x:1):
//
//   GET /inspect?reference=...   200 {"image": {...} | null}
//   GET /export?reference=...    200, the `docker save` tar stream
//   POST /pull?reference=...     204; the broker adds the registry credentials itself
//
// Anything else, and any reference that does not read back as itself, is refused before Docker is
// asked. The registry, which parses what the network sends, reaches Docker only through here
// (`brokerSource`).

import { chmod, chown, mkdir, rm } from 'node:fs/promises';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { dirname } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream';
import { IMAGE_CACHE } from '../../shared/contract.js';
import { parseImageReference, qualifiedReference } from '../../shared/image-reference.js';
import { log } from '../log.js';
import {
  DOCKER_SOCKET,
  exportImage,
  type ImageInfo,
  inspectImage,
  pullImage,
  registryAuth,
} from './engine.js';
import type { ImageSource } from './registry.js';

/** What the broker asks of Docker. */
export interface Engine {
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
  };
}

type Operation = 'inspect' | 'export' | 'pull';

const OPERATIONS: Record<string, Operation> = {
  'GET /inspect': 'inspect',
  'GET /export': 'export',
  'POST /pull': 'pull',
};

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

/** One operation on one reference, or a refusal; nothing here has touched Docker yet. */
export function brokerRequest(
  method: string | undefined,
  url: string | undefined,
): { operation: Operation; reference: string } {
  const raw = url ?? '/';
  const question = raw.indexOf('?');
  const path = question >= 0 ? raw.slice(0, question) : raw;
  const operation = OPERATIONS[`${method} ${path}`];
  if (!operation) {
    throw new BrokerError(
      404,
      `no operation ${method} ${path}: the broker takes GET /inspect, GET /export and POST /pull`,
    );
  }
  const params = new URLSearchParams(question >= 0 ? raw.slice(question + 1) : '');
  const keys = [...params.keys()];
  if (keys.length !== 1 || keys[0] !== 'reference') {
    throw new BrokerError(400, 'the broker takes one parameter, reference');
  }
  return { operation, reference: brokerReference(params.get('reference')!) };
}

function reply(res: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

async function handle(engine: Engine, req: IncomingMessage, res: ServerResponse): Promise<void> {
  req.resume();
  let asked: { operation: Operation; reference: string };
  try {
    asked = brokerRequest(req.method, req.url);
  } catch (error) {
    const status = error instanceof BrokerError ? error.status : 400;
    log(`broker: refused ${req.method} ${(req.url ?? '').slice(0, 200)}: ${(error as Error).message}`);
    reply(res, status, { message: (error as Error).message });
    return;
  }
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
 * so root and that group alone can connect.
 */
export async function startBroker(
  socketPath: string,
  engine: Engine,
  options: { gid?: number } = {},
): Promise<Server> {
  const dir = dirname(socketPath);
  await mkdir(dir, { recursive: true, mode: 0o750 });
  await chmod(dir, 0o750);
  if (options.gid !== undefined) await chown(dir, 0, options.gid);
  await rm(socketPath, { force: true });
  const server = createServer((req, res) => {
    void handle(engine, req, res);
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

function call(socketPath: string, method: string, operation: Operation, reference: string) {
  return new Promise<IncomingMessage>((resolve, reject) => {
    const path = `/${operation}?reference=${encodeURIComponent(reference)}`;
    const req = request({ socketPath, method, path }, resolve);
    req.on('error', reject);
    req.end();
  });
}

async function failure(response: IncomingMessage, operation: Operation, reference: string): Promise<Error> {
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  let message = text.trim();
  try {
    message = (JSON.parse(text) as { message?: string }).message ?? message;
  } catch {
    // not JSON: the text as it came
  }
  return new Error(message || `${operation} ${reference}: status ${response.statusCode}`);
}

/** The host's Docker as the registry reaches it: through the broker on its unix socket. */
export function brokerSource(socketPath: string): ImageSource {
  return {
    async inspect(reference) {
      const response = await call(socketPath, 'GET', 'inspect', reference);
      if (response.statusCode !== 200) throw await failure(response, 'inspect', reference);
      const chunks: Buffer[] = [];
      for await (const chunk of response) chunks.push(chunk as Buffer);
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { image: ImageInfo | null };
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
