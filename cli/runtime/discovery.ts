// Decides how vind reaches the Docker Engine, before any request is made. The Docker CLI, kind and
// testcontainers all answer this the same way, so vind does too, and talks to the engine that
// `docker ps` shows. The first strategy in this chain that applies wins:
//   1. DOCKER_HOST (unix:// or tcp://, TLS from DOCKER_TLS_VERIFY and DOCKER_CERT_PATH);
//   2. the Docker context: DOCKER_CONTEXT, else currentContext in config.json; "default" means the
//      sockets below;
//   3. the rootful socket /var/run/docker.sock (before rootless, as the Docker CLI does);
//   4. the rootless socket in $XDG_RUNTIME_DIR, else /run/user/<uid>;
//   5. the Docker Desktop sockets under ~/.docker.
// What the user chose (DOCKER_HOST, a named context) is never passed over: if it cannot be used,
// that is an error, not a quiet switch to some other engine. The core sees the machine only through
// DiscoveryEnvironment, so it is tested without files, sockets or Docker.

import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { VindError } from '../../shared/errors.js';

/** dockerode constructor options for an engine behind a unix socket. */
export interface UnixSocketEndpoint {
  socketPath: string;
}

/** dockerode constructor options for an engine over TCP; https means TLS. */
export interface TcpEndpoint {
  protocol: 'http' | 'https';
  host: string;
  port: number;
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  /**
   * The context says not to verify the engine's certificate (SkipTLSVerify). dockerode has no option
   * for that: the caller must also pass an https.Agent with rejectUnauthorized: false.
   */
  skipTlsVerify?: true;
}

export type DockerEndpoint = UnixSocketEndpoint | TcpEndpoint;

export type DockerEndpointSource =
  'DOCKER_HOST' | 'Docker context' | 'default socket' | 'rootless socket' | 'Docker Desktop socket';

export interface DiscoveredDocker {
  endpoint: DockerEndpoint;
  /** For messages, e.g. `unix:///var/run/docker.sock (default socket)`. */
  description: string;
  source: DockerEndpointSource;
  /** Why each strategy before the winning one did not apply, in order. */
  tried: string[];
}

/** Everything discovery reads from the machine. */
export interface DiscoveryEnvironment {
  env: Record<string, string | undefined>;
  homeDir: string;
  uid: number;
  /** The file's text, or undefined when it cannot be read. */
  readFile(path: string): string | undefined;
  /** True when the path exists and is a unix socket. */
  isSocket(path: string): boolean;
}

type Found = Omit<DiscoveredDocker, 'tried'>;
type Outcome = { found: Found } | { skipped: string };
type Strategy = (environment: DiscoveryEnvironment) => Outcome;
type TlsSettings = Pick<TcpEndpoint, 'ca' | 'cert' | 'key' | 'skipTlsVerify'>;

/** Runs the chain; throws a one-line VindError that lists every attempt when nothing applies. */
export function resolveDockerEndpoint(environment: DiscoveryEnvironment): DiscoveredDocker {
  const tried: string[] = [];
  for (const strategy of strategies(environment)) {
    const outcome = strategy(environment);
    if ('found' in outcome) return { ...outcome.found, tried };
    tried.push(outcome.skipped);
  }
  throw new VindError(
    `Docker is not reachable: ${tried.join('; ')}: start Docker (sudo systemctl start docker), ` +
      'or set DOCKER_HOST or a Docker context',
  );
}

/** resolveDockerEndpoint on this machine: the process environment, home directory and files. */
export function discoverDockerEndpoint(): DiscoveredDocker {
  return resolveDockerEndpoint({
    env: process.env,
    homeDir: homedir(),
    uid: process.getuid?.() ?? 0,
    readFile: (path) => {
      try {
        return readFileSync(path, 'utf8');
      } catch {
        return undefined;
      }
    },
    isSocket: (path) => {
      try {
        return statSync(path).isSocket();
      } catch {
        return false;
      }
    },
  });
}

function strategies({ env, homeDir, uid }: DiscoveryEnvironment): Strategy[] {
  const rootlessDir = env.XDG_RUNTIME_DIR || `/run/user/${uid}`;
  return [
    fromDockerHost,
    fromDockerContext,
    fromSocket('/var/run/docker.sock', 'default socket'),
    fromSocket(join(rootlessDir, 'docker.sock'), 'rootless socket'),
    fromSocket(join(homeDir, '.docker', 'run', 'docker.sock'), 'Docker Desktop socket'),
    fromSocket(join(homeDir, '.docker', 'desktop', 'docker.sock'), 'Docker Desktop socket'),
  ];
}

function fromDockerHost(environment: DiscoveryEnvironment): Outcome {
  const { env, readFile } = environment;
  const host = env.DOCKER_HOST;
  if (!host) return { skipped: 'DOCKER_HOST is not set' };
  // As in the Docker CLI, any non-empty DOCKER_TLS_VERIFY turns TLS on, and the certificates
  // default to the Docker configuration directory.
  const tls = env.DOCKER_TLS_VERIFY
    ? readTlsFiles(env.DOCKER_CERT_PATH || dockerConfigDir(environment), readFile)
    : undefined;
  const endpoint = parseDockerHost(host, 'DOCKER_HOST', tls);
  return { found: { endpoint, description: describe(endpoint, 'DOCKER_HOST'), source: 'DOCKER_HOST' } };
}

function fromDockerContext(environment: DiscoveryEnvironment): Outcome {
  const chosen = chosenContext(environment);
  if ('skipped' in chosen) return chosen;
  const { name, origin } = chosen;
  if (name === 'default') return { skipped: 'context "default"' };

  // The Docker CLI stores each context under the sha256 of its name, so any name is a safe folder name.
  const folder = createHash('sha256').update(name).digest('hex');
  const contextsDir = join(dockerConfigDir(environment), 'contexts');
  const metaFile = join(contextsDir, 'meta', folder, 'meta.json');
  const metaText = environment.readFile(metaFile);
  if (metaText === undefined) {
    throw new VindError(
      `Docker context "${name}" (from ${origin}) does not exist: ${metaFile} is missing; ` +
        'see `docker context ls`, and pick one with `docker context use`',
    );
  }
  const meta = parseJson(metaText);
  if (meta === undefined)
    throw new VindError(`Docker context "${name}" is unreadable: ${metaFile} is not valid JSON`);
  const docker = field(field(meta, 'Endpoints'), 'docker');
  const host = field(docker, 'Host');
  if (typeof host !== 'string' || !host) {
    throw new VindError(
      `Docker context "${name}" has no Docker endpoint: ${metaFile} sets no Endpoints.docker.Host`,
    );
  }

  // As in the Docker CLI, a context uses TLS when it has TLS files or skips verification.
  const files = readTlsFiles(join(contextsDir, 'tls', folder, 'docker'), environment.readFile);
  const skipVerify = field(docker, 'SkipTLSVerify') === true;
  const tls = skipVerify
    ? { ...files, skipTlsVerify: true as const }
    : Object.keys(files).length
      ? files
      : undefined;
  const label = `context "${name}"`;
  const endpoint = parseDockerHost(host, `Docker ${label} endpoint`, tls);
  return { found: { endpoint, description: describe(endpoint, label), source: 'Docker context' } };
}

function fromSocket(path: string, source: DockerEndpointSource): Strategy {
  return ({ isSocket }) =>
    isSocket(path)
      ? { found: { endpoint: { socketPath: path }, description: `unix://${path} (${source})`, source } }
      : { skipped: `${path} does not exist` };
}

/** DOCKER_CONTEXT wins over config.json's currentContext, as in the Docker CLI. */
function chosenContext(
  environment: DiscoveryEnvironment,
): { name: string; origin: string } | { skipped: string } {
  const fromEnv = environment.env.DOCKER_CONTEXT;
  if (fromEnv) return { name: fromEnv, origin: 'DOCKER_CONTEXT' };
  const configFile = join(dockerConfigDir(environment), 'config.json');
  const text = environment.readFile(configFile);
  if (text === undefined) return { skipped: 'no Docker context set' };
  const config = parseJson(text);
  // The Docker CLI also carries on without a broken config.json (it only warns).
  if (config === undefined) return { skipped: `${configFile} is not valid JSON` };
  const current = field(config, 'currentContext');
  if (typeof current !== 'string' || !current) return { skipped: 'no Docker context set' };
  return { name: current, origin: configFile };
}

/** Turns a Docker host address into dockerode options; `where` names its origin in errors. */
function parseDockerHost(address: string, where: string, tls: TlsSettings | undefined): DockerEndpoint {
  const separator = address.indexOf('://');
  // The Docker CLI reads an address without a scheme as TCP.
  const scheme = separator < 0 ? 'tcp' : address.slice(0, separator);
  const rest = separator < 0 ? address : address.slice(separator + 3);
  switch (scheme) {
    case 'unix':
      if (!rest)
        throw new VindError(`${where} "${address}" names no socket: use unix:///path/to/docker.sock`);
      return { socketPath: rest };
    case 'tcp':
      return tcpEndpoint(address, rest, where, tls);
    case 'npipe':
      throw new VindError(
        `${where} "${address}" is a Windows named pipe (npipe://), which is not supported on Linux: ` +
          'use unix:// or tcp://',
      );
    default:
      throw new VindError(
        `${where} "${address}" has the unsupported scheme ${scheme}://: use unix:// or tcp://`,
      );
  }
}

function tcpEndpoint(
  address: string,
  hostAndPort: string,
  where: string,
  tls: TlsSettings | undefined,
): TcpEndpoint {
  let url: URL;
  try {
    url = new URL(`tcp://${hostAndPort}`);
  } catch {
    throw new VindError(`${where} "${address}" is not a valid address: use tcp://host:port`);
  }
  // Docker's conventional ports: 2376 with TLS, 2375 without.
  const port = url.port ? Number(url.port) : tls ? 2376 : 2375;
  // URL keeps the brackets of an IPv6 address; a socket connection wants the bare address.
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  const endpoint: TcpEndpoint = { protocol: tls ? 'https' : 'http', host, port };
  return tls ? { ...endpoint, ...tls } : endpoint;
}

/** ca.pem, cert.pem and key.pem from a folder; missing ones are left out, as the Docker CLI does. */
function readTlsFiles(dir: string, readFile: DiscoveryEnvironment['readFile']): TlsSettings {
  const files: TlsSettings = {};
  for (const name of ['ca', 'cert', 'key'] as const) {
    const text = readFile(join(dir, `${name}.pem`));
    if (text !== undefined) files[name] = text;
  }
  return files;
}

function describe(endpoint: DockerEndpoint, label: string): string {
  if ('socketPath' in endpoint) return `unix://${endpoint.socketPath} (${label})`;
  const host = endpoint.host.includes(':') ? `[${endpoint.host}]` : endpoint.host;
  const security =
    endpoint.protocol === 'http' ? '' : endpoint.skipTlsVerify ? ', TLS without verification' : ', TLS';
  return `tcp://${host}:${endpoint.port} (${label}${security})`;
}

function dockerConfigDir({ env, homeDir }: DiscoveryEnvironment): string {
  return env.DOCKER_CONFIG || join(homeDir, '.docker');
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

/** A property of a JSON object, or undefined when the value is not an object. */
function field(value: unknown, name: string): unknown {
  return typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[name] : undefined;
}
