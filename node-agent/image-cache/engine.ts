// The image cache's view of the host's Docker: the Engine API calls the broker makes and nothing
// else: for images inspect, export and pull; for the host-port forwarders list, inspect, create, start
// and remove containers, and inspect a network; for sleep and wake on a front door's word pause,
// unpause, start, stop and update containers, and list, create and remove the sleep records. Only the engine broker (broker.ts) uses it, inside
// the cache container, on the mounted socket, with node:http because the node image has no dockerode.

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
  body?: unknown,
): Promise<IncomingMessage> {
  const payload = body === undefined ? undefined : JSON.stringify(body);
  if (payload !== undefined) {
    headers = {
      ...headers,
      'Content-Type': 'application/json',
      'Content-Length': String(Buffer.byteLength(payload)),
    };
  }
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, method, path: `${API}${path}`, headers }, resolve);
    req.on('error', reject);
    req.end(payload);
  });
}

async function text(response: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of response) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Docker's own message of a refusal ({"message": ...}), else the body as it came. */
function engineMessage(body: string): string {
  try {
    return ((JSON.parse(body) as { message?: string }).message ?? body).trim();
  } catch {
    return body.trim();
  }
}

async function failure(what: string, response: IncomingMessage): Promise<Error> {
  const message = engineMessage(await text(response)) || `status ${response.statusCode}`;
  return new Error(`${what}: ${message.split('\n')[0]}`);
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

// ---- containers and networks, for the host-port forwarders ----

export interface NetworkDetails {
  Name: string;
  IPAM?: { Config?: { Subnet?: string }[] | null };
}

export interface ContainerSummary {
  Id: string;
  /** With a leading slash, as Docker lists them. */
  Names?: string[];
  Labels?: Record<string, string> | null;
  /** running, paused, exited... */
  State?: string;
}

export interface PortBinding {
  HostIp: string;
  HostPort: string;
}

export interface ContainerDetails {
  Id: string;
  /** With a leading slash. */
  Name: string;
  /** The image's id. */
  Image: string;
  Config: { Cmd?: string[] | null; Labels?: Record<string, string> | null };
  State?: { Running?: boolean; StartedAt?: string };
  NetworkSettings?: { Ports?: Record<string, PortBinding[] | null> | null };
}

/** The body of a container create, as far as vind sets it. */
export interface ContainerCreateBody {
  Image: string;
  Cmd: string[];
  User?: string;
  Labels: Record<string, string>;
  ExposedPorts?: Record<string, Record<string, never>>;
  HostConfig: {
    PortBindings?: Record<string, PortBinding[]>;
    NetworkMode?: string;
    RestartPolicy?: { Name: string; MaximumRetryCount?: number };
    CapDrop?: string[];
    SecurityOpt?: string[];
    ReadonlyRootfs?: boolean;
    Sysctls?: Record<string, string>;
  };
}

/** A network by name or id, or undefined when there is none. */
export async function inspectNetwork(
  name: string,
  socket = DOCKER_SOCKET,
): Promise<NetworkDetails | undefined> {
  const response = await call(socket, 'GET', `/networks/${encodeURIComponent(name)}`);
  if (response.statusCode === 404) {
    response.resume();
    return undefined;
  }
  if (response.statusCode !== 200) throw await failure(`inspecting network ${name}`, response);
  return JSON.parse(await text(response)) as NetworkDetails;
}

/** Every container, running or not, that carries all of the given labels with their values. */
export async function listContainers(
  labels: Record<string, string>,
  socket = DOCKER_SOCKET,
): Promise<ContainerSummary[]> {
  const filters = JSON.stringify({ label: Object.entries(labels).map(([key, value]) => `${key}=${value}`) });
  const response = await call(socket, 'GET', `/containers/json?all=1&filters=${encodeURIComponent(filters)}`);
  if (response.statusCode !== 200) throw await failure('listing containers', response);
  return JSON.parse(await text(response)) as ContainerSummary[];
}

/** A container by name, id or id prefix, or undefined when there is none. */
export async function inspectContainer(
  id: string,
  socket = DOCKER_SOCKET,
): Promise<ContainerDetails | undefined> {
  const response = await call(socket, 'GET', `/containers/${encodeURIComponent(id)}/json`);
  if (response.statusCode === 404) {
    response.resume();
    return undefined;
  }
  if (response.statusCode !== 200) throw await failure(`inspecting container ${id}`, response);
  return JSON.parse(await text(response)) as ContainerDetails;
}

/** Creates a container and answers its id. */
export async function createContainer(
  name: string,
  body: ContainerCreateBody,
  socket = DOCKER_SOCKET,
): Promise<string> {
  const response = await call(
    socket,
    'POST',
    `/containers/create?name=${encodeURIComponent(name)}`,
    {},
    body,
  );
  if (response.statusCode !== 201) throw await failure(`creating container ${name}`, response);
  return (JSON.parse(await text(response)) as { Id: string }).Id;
}

export async function startContainer(id: string, socket = DOCKER_SOCKET): Promise<void> {
  const response = await call(socket, 'POST', `/containers/${encodeURIComponent(id)}/start`);
  // 304: already running.
  if (response.statusCode !== 204 && response.statusCode !== 304) {
    throw await failure(`starting container ${id}`, response);
  }
  response.resume();
}

/** Removes a container, running or not, with its anonymous volumes; one that is gone already is fine. */
export async function removeContainer(id: string, socket = DOCKER_SOCKET): Promise<void> {
  const response = await call(socket, 'DELETE', `/containers/${encodeURIComponent(id)}?force=1&v=1`);
  if (response.statusCode !== 204 && response.statusCode !== 404) {
    throw await failure(`removing container ${id}`, response);
  }
  response.resume();
}

// ---- sleep and wake, for the front doors (wake on demand, auto-sleep) ----

async function containerAction(socket: string, id: string, action: string, query = ''): Promise<number> {
  const response = await call(socket, 'POST', `/containers/${encodeURIComponent(id)}/${action}${query}`);
  const status = response.statusCode ?? 0;
  if (status >= 400 && status !== 409) throw await failure(`${action} of container ${id}`, response);
  response.resume();
  return status;
}

export async function pauseContainer(id: string, socket = DOCKER_SOCKET): Promise<void> {
  // 409: already paused.
  await containerAction(socket, id, 'pause');
}

export async function unpauseContainer(id: string, socket = DOCKER_SOCKET): Promise<void> {
  // 409: not paused.
  await containerAction(socket, id, 'unpause');
}

export async function stopContainer(id: string, timeoutSeconds: number, socket = DOCKER_SOCKET) {
  // 304: already stopped.
  await containerAction(socket, id, 'stop', `?t=${timeoutSeconds}`);
}

export async function setRestartPolicy(id: string, policy: string, socket = DOCKER_SOCKET): Promise<void> {
  const response = await call(
    socket,
    'POST',
    `/containers/${encodeURIComponent(id)}/update`,
    {},
    {
      RestartPolicy: { Name: policy, MaximumRetryCount: 0 },
    },
  );
  if (response.statusCode !== 200) throw await failure(`updating container ${id}`, response);
  response.resume();
}

/** The labels of every volume carrying all of the given labels (an empty value: the key alone). */
export async function volumeLabels(
  labels: Record<string, string>,
  socket = DOCKER_SOCKET,
): Promise<Record<string, string>[]> {
  const filters = JSON.stringify({
    label: Object.entries(labels).map(([key, value]) => (value === '' ? key : `${key}=${value}`)),
  });
  const response = await call(socket, 'GET', `/volumes?filters=${encodeURIComponent(filters)}`);
  if (response.statusCode !== 200) throw await failure('listing volumes', response);
  const body = JSON.parse(await text(response)) as { Volumes?: { Labels?: Record<string, string> | null }[] };
  return (body.Volumes ?? []).map((v) => v.Labels ?? {});
}

export async function createVolume(
  name: string,
  labels: Record<string, string>,
  socket = DOCKER_SOCKET,
): Promise<void> {
  const response = await call(socket, 'POST', '/volumes/create', {}, { Name: name, Labels: labels });
  if (response.statusCode !== 201) throw await failure(`creating volume ${name}`, response);
  response.resume();
}

export async function removeVolume(name: string, socket = DOCKER_SOCKET): Promise<void> {
  const response = await call(socket, 'DELETE', `/volumes/${encodeURIComponent(name)}?force=1`);
  if (response.statusCode !== 204 && response.statusCode !== 404) {
    throw await failure(`removing volume ${name}`, response);
  }
  response.resume();
}
