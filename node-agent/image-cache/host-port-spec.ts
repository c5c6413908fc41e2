// What a host-port request may ask, and the forwarder container that answers it. A cluster's control
// plane sends the whole set of LoadBalancer ports it wants on the Docker host's 127.0.0.1; the
// registry and the engine broker each check it here (the broker trusts no caller), and the broker
// makes one forwarder per address from `hostPortContainerSpec`. Everything here is pure.

import type { IncomingMessage } from 'node:http';
import {
  HOST_PORTS_LISTEN,
  type HostPortForward,
  LABELS,
  networkName,
  type PortProtocol,
  VIND_VERSION,
} from '../../shared/contract.js';
import { ipToInt } from '../../shared/subnets.js';
import type { ContainerCreateBody, PortBinding } from './engine.js';
import { REGISTRY_USER } from './isolation.js';

/** A cluster network's LoadBalancer addresses are its host numbers 128-254: 127 at most. */
export const MAX_FORWARDS = 127;
export const MAX_PORTS = 64;
export const MAX_BODY_BYTES = 64 * 1024;
const MAX_CLUSTER_NAME = 32;
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const PROTOCOLS: readonly PortProtocol[] = ['TCP', 'UDP'];

/** A refusal with the HTTP status to answer it with. */
export class HostPortError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const refuse = (message: string) => new HostPortError(400, message);

/** A value as it came, short and on one line, for a message. */
function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 40 ? `${text.slice(0, 40)}...` : text;
}

/** An object with no fields but `keys`. */
function fields(value: unknown, keys: string[], what: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw refuse(`${what} is not an object with ${keys.join(', ')}`);
  }
  const unknown = Object.keys(value).find((key) => !keys.includes(key));
  if (unknown !== undefined)
    throw refuse(`${what} has an unknown field ${show(unknown)}: it takes ${keys.join(', ')}`);
  return value as Record<string, unknown>;
}

function list(value: unknown, what: string, min: number, max: number, items: string): unknown[] {
  if (!Array.isArray(value)) throw refuse(`${what} is not a list`);
  if (value.length < min || value.length > max) {
    throw refuse(`${what} lists ${value.length} ${items}: use ${min === 0 ? 'at most' : `${min} to`} ${max}`);
  }
  return value;
}

export function isDottedIpv4(text: unknown): text is string {
  if (typeof text !== 'string') return false;
  try {
    ipToInt(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * The forwards of a request, checked: each address a dotted IPv4 address once, each with 1 to 64
 * ports (an integer 1-65535 and TCP or UDP), no port and protocol twice for one address, and no
 * field that is not known. Answers a copy with exactly those fields.
 */
export function checkForwards(value: unknown): HostPortForward[] {
  const forwards = list(value, 'forwards', 0, MAX_FORWARDS, 'addresses');
  const addresses = new Set<string>();
  return forwards.map((item, i) => {
    const forward = fields(item, ['address', 'ports'], `forwards[${i}]`);
    const address = forward.address;
    if (!isDottedIpv4(address)) {
      throw refuse(`forwards[${i}].address ${show(address)} is not a dotted IPv4 address`);
    }
    if (addresses.has(address)) throw refuse(`forwards[${i}].address ${address} is listed twice`);
    addresses.add(address);
    const seen = new Set<string>();
    const ports = list(forward.ports, `forwards[${i}].ports`, 1, MAX_PORTS, 'ports').map((entry, j) => {
      const what = `forwards[${i}].ports[${j}]`;
      const { port, protocol } = fields(entry, ['port', 'protocol'], what);
      if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
        throw refuse(`${what}.port ${show(port)} is not a port: use an integer from 1 to 65535`);
      }
      if (!PROTOCOLS.includes(protocol as PortProtocol)) {
        throw refuse(`${what}.protocol ${show(protocol)} is not TCP or UDP`);
      }
      const key = `${port}/${protocol as PortProtocol}`;
      if (seen.has(key)) throw refuse(`${what}: ${key} is listed twice for ${address}`);
      seen.add(key);
      return { port, protocol: protocol as PortProtocol };
    });
    return { address, ports };
  });
}

/** A request's body, `{"forwards": [...]}`, checked by `checkForwards`. */
export function parseHostPortBody(text: string): HostPortForward[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw refuse('the body is not JSON: send {"forwards": [...]}');
  }
  return checkForwards(fields(value, ['forwards'], 'the body').forwards);
}

/** A cluster's name as the CLI allows it: a DNS label of at most 32 characters. */
export function checkClusterName(name: string): string {
  if (name.length > MAX_CLUSTER_NAME || !DNS_LABEL.test(name)) {
    throw refuse(`invalid cluster name ${show(name)}: a DNS label of at most ${MAX_CLUSTER_NAME} characters`);
  }
  return name;
}

/**
 * A request's body, at most `limit` bytes. A longer one is refused without reading the rest (the
 * answer should close the connection).
 */
export function readBody(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<string> {
  const tooLong = () => refuse(`the body is over ${limit / 1024} KiB`);
  if (Number(req.headers['content-length'] ?? 0) > limit) return Promise.reject(tooLong());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.pause();
        req.removeAllListeners('data');
        reject(tooLong());
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
    // A client gone halfway: nothing to answer, but nothing left waiting either.
    req.on('close', () => {
      if (!req.complete) reject(refuse('the body ended before its end'));
    });
  });
}

// ---- the forwarder container ----

/** `vind-<cluster>-lb-172-30-0-128` */
export function hostPortContainerName(cluster: string, address: string): string {
  return `vind-${cluster}-lb-${address.replaceAll('.', '-')}`;
}

/** `80/TCP`, as the forwarder's command takes it. */
export function portArgument(port: { port: number; protocol: PortProtocol }): string {
  return `${port.port}/${port.protocol}`;
}

/** Docker's name of a container port: `80/tcp`. */
export function dockerPortKey(port: { port: number; protocol: PortProtocol }): string {
  return `${port.port}/${port.protocol.toLowerCase()}`;
}

/** The forwarder's command, its ports in one order, so that the same set always reads the same. */
export function hostPortCommand(forward: HostPortForward): string[] {
  const ports = [...forward.ports].sort((a, b) => a.port - b.port || a.protocol.localeCompare(b.protocol));
  return ['host-port', forward.address, ...ports.map(portArgument)];
}

/**
 * The forwarder for one LoadBalancer address: the cache's own image in role `host-port`, as the
 * registry's unprivileged user, with no capability, no mount and a read-only root, on the cluster
 * network. Each port is published on the host's 127.0.0.1 at a port Docker picks.
 */
export function hostPortContainerSpec(
  cluster: string,
  forward: HostPortForward,
  image: string,
): ContainerCreateBody {
  const bindings: Record<string, PortBinding[]> = {};
  for (const port of forward.ports)
    bindings[dockerPortKey(port)] = [{ HostIp: HOST_PORTS_LISTEN, HostPort: '' }];
  return {
    Image: image,
    Cmd: hostPortCommand(forward),
    User: `${REGISTRY_USER.uid}:${REGISTRY_USER.gid}`,
    Labels: {
      [LABELS.cluster]: cluster,
      [LABELS.role]: 'host-port',
      [LABELS.loadBalancerAddress]: forward.address,
      [LABELS.version]: VIND_VERSION,
    },
    ExposedPorts: Object.fromEntries(Object.keys(bindings).map((key) => [key, {}])),
    HostConfig: {
      PortBindings: bindings,
      NetworkMode: networkName(cluster),
      RestartPolicy: { Name: 'unless-stopped', MaximumRetryCount: 0 },
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges'],
      ReadonlyRootfs: true,
      // Ports below 1024 (80, 443, 53) bind without a capability, in this network namespace only.
      Sysctls: { 'net.ipv4.ip_unprivileged_port_start': '0' },
    },
  };
}
