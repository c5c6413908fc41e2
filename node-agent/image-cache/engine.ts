// The image cache's view of the host's Docker: three Engine API calls and nothing else (inspect,
// export, pull). Only the engine broker (broker.ts) uses it, inside the cache container, on the
// mounted socket, with node:http because the node image has no dockerode.

import { request, type IncomingMessage } from 'node:http';
import { readFile } from 'node:fs/promises';
import { IMAGE_CACHE } from '../../shared/contract.js';
import { familiarRepository, parseImageReference } from '../../shared/image-reference.js';

export const DOCKER_SOCKET = process.env.VIND_DOCKER_SOCKET ?? IMAGE_CACHE.dockerSocket;
const API = '/v1.41';

function call(
  socket: string,
  method: string,
  path: string,
  headers: Record<string, string> = {},
): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, method, path: `${API}${path}`, headers }, resolve);
    req.on('error', reject);
    req.end();
  });
}

async function text(response: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export interface ImageInfo {
  Id: string;
  Architecture?: string;
  Os?: string;
}

/** The host's image for a reference, or undefined when the host does not have it. */
export async function inspectImage(
  reference: string,
  socket = DOCKER_SOCKET,
): Promise<ImageInfo | undefined> {
  const response = await call(socket, 'GET', `/images/${encodeURIComponent(reference)}/json`);
  const body = await text(response);
  if (response.statusCode === 404) return undefined;
  if (response.statusCode !== 200)
    throw new Error(`inspecting ${reference}: ${response.statusCode} ${body.trim()}`);
  return JSON.parse(body) as ImageInfo;
}

/** `docker save` of one image, as a stream. */
export async function exportImage(reference: string, socket = DOCKER_SOCKET): Promise<IncomingMessage> {
  const response = await call(socket, 'GET', `/images/${encodeURIComponent(reference)}/get`);
  if (response.statusCode !== 200) {
    throw new Error(`exporting ${reference}: ${response.statusCode} ${(await text(response)).trim()}`);
  }
  return response;
}

interface DockerConfig {
  auths?: Record<string, { auth?: string; username?: string; password?: string; identitytoken?: string }>;
}

/** The `auths` of a Docker config, or of the credentials the CLI read through the user's helpers. */
async function readAuths(path: string): Promise<NonNullable<DockerConfig['auths']>> {
  try {
    const parsed = JSON.parse(await readFile(path, 'utf8')) as DockerConfig & DockerConfig['auths'];
    // The config file nests them under "auths"; the helpers' file is the map itself.
    return parsed.auths ?? (parsed as NonNullable<DockerConfig['auths']>);
  } catch {
    return {};
  }
}

/**
 * Credentials for a registry as X-Registry-Auth: from the user's Docker config (its folder mounted
 * read-only, re-read at every pull, so a later `docker login` is seen), else from what the CLI read
 * through the user's credential helpers.
 */
export async function registryAuth(registry: string, ...sources: string[]): Promise<string | undefined> {
  const keys =
    registry === 'docker.io' ? ['https://index.docker.io/v1/', 'docker.io', 'index.docker.io'] : [registry];
  for (const source of sources) {
    const auths = await readAuths(source);
    for (const key of keys) {
      const entry = auths[key] ?? auths[`https://${key}`];
      if (!entry) continue;
      let { username, password } = entry;
      if (entry.auth)
        [username, password] = Buffer.from(entry.auth, 'base64').toString('utf8').split(/:(.*)/s);
      if (!username && !password && !entry.identitytoken) continue;
      const auth = { username, password, identitytoken: entry.identitytoken, serveraddress: key };
      return Buffer.from(JSON.stringify(auth)).toString('base64url');
    }
  }
  return undefined;
}

/** Pulls through the host daemon, so the image lands in the user's own Docker too. */
export async function pullImage(reference: string, auth?: string, socket = DOCKER_SOCKET): Promise<void> {
  const parsed = parseImageReference(reference);
  const image = familiarRepository(parsed);
  // The Engine API takes a digest in the tag parameter too; a digest pins more than a tag.
  const tag = parsed.digest ?? parsed.tag ?? 'latest';
  const query = `fromImage=${encodeURIComponent(image)}${tag ? `&tag=${encodeURIComponent(tag)}` : ''}`;
  const response = await call(
    socket,
    'POST',
    `/images/create?${query}`,
    auth ? { 'X-Registry-Auth': auth } : {},
  );
  const body = await text(response);
  if (response.statusCode !== 200) {
    const message = (() => {
      try {
        return (JSON.parse(body) as { message?: string }).message ?? body;
      } catch {
        return body;
      }
    })();
    throw new Error(message.trim());
  }
  // Progress arrives as JSON lines; a failure is a line with "error".
  for (const line of body.split('\n')) {
    if (!line.trim()) continue;
    const message = JSON.parse(line) as { error?: string };
    if (message.error) throw new Error(message.error);
  }
}
