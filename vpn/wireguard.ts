// WireGuard interfaces, driven through `ip` and `wg` (wireguard-tools), for the CLI and the node agent.
//
// Implementation: the kernel's when it has one (`ip link add NAME type wireguard`); else wireguard-go,
// the userspace implementation, which makes a TUN device of that name and serves the same control
// socket (`/var/run/wireguard/NAME.sock`) that `wg` talks to, so everything after the bring-up is the
// same. wireguard-go forks into the background by default; here it runs in the foreground (`-f`) as a
// child of the caller, because then the caller holds its process id and stops exactly that process,
// learns at once when it dies (`exited`: its interface died with it), and reads its output, which
// must be consumed anyway: a full pipe would stall the tunnel. A daemonized one would have to be found
// again by name and could outlive a failed start unnoticed. The price: the interface lives as long as
// its owner (execa ends the child when the owner exits), which is what a node agent wants.
//
// Secrets: a private or preshared key reaches `wg` only as a file of mode 0600 (`wg set private-key
// FILE`), never on a command line (other processes read those in /proc) or in the environment. The
// dump `wg show NAME dump` prints the private key on its first line and each peer's preshared key: the
// parser keeps neither, only whether a preshared key is set.
//
// MTU: WireGuard adds an outer IP header (20 bytes for IPv4, 40 for IPv6), UDP (8) and its own data
// header (type, receiver index, counter: 16) plus the authentication tag (16): 60 bytes over IPv4, 80
// over IPv6. Padding of the plaintext to 16 bytes never goes past the tunnel MTU, so it adds nothing.
// The default subtracts 80, as wg-quick does: the same tunnel MTU holds whichever family the endpoint
// is reached by (or roams to), at 20 bytes per packet; an endpoint known to be IPv4 may use 60.
//
// Peers: `wg set` adds a peer or updates it in place (its session survives): `setPeers` makes each
// given peer exactly as described (allowed IPs replaced, preshared key and keepalive set or cleared),
// except that an endpoint left out stays as it is, since a peer without a configured endpoint learns
// it from the packets that arrive. `syncPeers` makes the interface's peers exactly a given list.

import { isIP } from 'node:net';
import { mkdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { execa } from 'execa';
import { writeFileAtomic } from '../shared/atomic-write.js';
import { PermanentError, poll, sleep } from '../shared/poll.js';
import { isValidKey } from './keys.js';

export type WireGuardImplementation = 'kernel' | 'wireguard-go';

export class WireGuardError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WireGuardError';
  }
}

/** Bytes WireGuard adds to every packet, by the family of the outer (underlay) IP header. */
export const WIREGUARD_OVERHEAD = { ipv4: 60, ipv6: 80 } as const;

/** The smallest tunnel MTU accepted: IPv4's minimum datagram size, which every host must take. */
const MIN_TUNNEL_MTU = 576;

/** The tunnel MTU for an underlay link MTU. `outer` is the family endpoints are reached by; `any` as IPv6. */
export function wireGuardMtu(linkMtu: number, outer: 'ipv4' | 'ipv6' | 'any' = 'any'): number {
  if (!Number.isInteger(linkMtu) || linkMtu < 1 || linkMtu > 65535) {
    throw new WireGuardError(`link MTU ${linkMtu} is not an MTU: use a whole number of bytes up to 65535`);
  }
  const mtu = linkMtu - WIREGUARD_OVERHEAD[outer === 'ipv4' ? 'ipv4' : 'ipv6'];
  if (mtu < MIN_TUNNEL_MTU) {
    throw new WireGuardError(
      `link MTU ${linkMtu} leaves a tunnel MTU of ${mtu}, below ${MIN_TUNNEL_MTU}: the underlay is too small`,
    );
  }
  return mtu;
}

// ---- what is asked for ----

export interface InterfaceConfig {
  name: string;
  /** A file holding the private key (base64), readable by its owner only (mode 0600). */
  privateKeyFile: string;
  /** The UDP port to listen on; left out, the implementation picks one. */
  listenPort?: number;
  mtu?: number;
  /** The interface's own addresses with their prefix, e.g. `10.99.0.1/32`, `fd00:99::1/64`. */
  addresses?: string[];
  /** Destinations routed into the tunnel besides the addresses' own prefixes. */
  routes?: string[];
}

export interface Peer {
  publicKey: string;
  /** A file holding a preshared key (base64), mode 0600; left out, the peer has none. */
  presharedKeyFile?: string;
  /** What the peer may send from, and what is sent to it: CIDRs. Empty: nothing. */
  allowedIps: string[];
  /** `host:port` or `[ipv6]:port`; left out, kept as is (or learnt from the peer's packets). */
  endpoint?: string;
  /** Seconds between keepalives, for a peer behind NAT; left out or 0: off. */
  persistentKeepalive?: number;
}

// ---- what `wg show NAME dump` says ----

export interface PeerState {
  publicKey: string;
  hasPresharedKey: boolean;
  endpoint?: string;
  allowedIps: string[];
  /** The last completed handshake; undefined when there was none. */
  latestHandshake?: Date;
  rxBytes: number;
  txBytes: number;
  /** Seconds; undefined when off. */
  persistentKeepalive?: number;
}

export interface InterfaceState {
  /** Undefined while no private key is set. */
  publicKey?: string;
  listenPort: number;
  fwmark?: number;
  peers: PeerState[];
}

// ---- checks ----

/** Linux interface names: at most 15 bytes; here letters, digits and `_.-=+`, not starting with `-`. */
export function checkInterfaceName(name: string): void {
  if (!/^[A-Za-z0-9_.=+][A-Za-z0-9_.=+-]{0,14}$/.test(name) || name === '.' || name === '..') {
    throw new WireGuardError(
      `"${name}" is not an interface name: use 1-15 letters, digits or _.-=+, not starting with -`,
    );
  }
}

/** An address or network with its prefix length, IPv4 or IPv6: `10.0.0.1/32`, `fd00::/64`. */
export function checkCidr(text: string, what: string): void {
  const slash = text.lastIndexOf('/');
  const address = slash > 0 ? text.slice(0, slash) : '';
  const prefix = slash > 0 ? text.slice(slash + 1) : '';
  const family = isIP(address);
  const max = family === 6 ? 128 : 32;
  if (family === 0 || !/^(0|[1-9][0-9]{0,2})$/.test(prefix) || Number(prefix) > max) {
    throw new WireGuardError(
      `${what} "${text}" is not an address with a prefix length: use e.g. 10.99.0.0/24 or fd00:99::/64`,
    );
  }
}

function checkPort(port: number, what: string, min = 0): void {
  if (!Number.isInteger(port) || port < min || port > 65535) {
    throw new WireGuardError(`${what} ${port} is not a port: use ${min}-65535`);
  }
}

/** `1.2.3.4:51820`, `[fd00::1]:51820` or `host.example:51820`. */
export function checkEndpoint(endpoint: string): void {
  const match =
    /^(?:\[([0-9A-Fa-f:.]+)\]|([0-9.]+)|([A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)):([0-9]{1,5})$/.exec(
      endpoint,
    );
  const ok =
    match !== null &&
    (match[1] === undefined || isIP(match[1]) === 6) &&
    (match[2] === undefined || isIP(match[2]) === 4) &&
    Number(match[4]) >= 1 &&
    Number(match[4]) <= 65535;
  if (!ok) {
    throw new WireGuardError(
      `endpoint "${endpoint}" is not host:port: use e.g. 192.0.2.7:51820 or [2001:db8::7]:51820`,
    );
  }
}

function checkPublicKey(key: string): void {
  if (!isValidKey(key)) {
    throw new WireGuardError(`peer key "${key}" is not a WireGuard public key (44 characters of base64)`);
  }
}

// ---- `wg set` arguments ----

/** The words of `wg set` for one peer: made exactly as described (but an endpoint left out). */
export function peerArgs(peer: Peer): string[] {
  checkPublicKey(peer.publicKey);
  for (const cidr of peer.allowedIps) checkCidr(cidr, 'allowed IP');
  const args = ['peer', peer.publicKey];
  // /dev/null as the key file clears a preshared key set before.
  args.push('preshared-key', peer.presharedKeyFile ?? '/dev/null');
  if (peer.endpoint !== undefined) {
    checkEndpoint(peer.endpoint);
    args.push('endpoint', peer.endpoint);
  }
  const keepalive = peer.persistentKeepalive ?? 0;
  checkPort(keepalive, 'persistent keepalive');
  args.push('persistent-keepalive', keepalive === 0 ? 'off' : String(keepalive));
  // An empty list removes every allowed IP; a list replaces the old one.
  args.push('allowed-ips', peer.allowedIps.join(','));
  return args;
}

export interface WgSetChanges {
  privateKeyFile?: string;
  listenPort?: number;
  peers?: Peer[];
  removePeers?: string[];
}

/** `wg set NAME ...` for a set of changes, applied by `wg` in one go. */
export function wgSetArgs(name: string, changes: WgSetChanges): string[] {
  checkInterfaceName(name);
  const args = ['set', name];
  if (changes.listenPort !== undefined) {
    checkPort(changes.listenPort, 'listen port');
    args.push('listen-port', String(changes.listenPort));
  }
  if (changes.privateKeyFile !== undefined) args.push('private-key', changes.privateKeyFile);
  for (const key of changes.removePeers ?? []) {
    checkPublicKey(key);
    args.push('peer', key, 'remove');
  }
  for (const peer of changes.peers ?? []) args.push(...peerArgs(peer));
  return args;
}

// ---- `wg show NAME dump` ----

const NONE = '(none)';

function count(text: string, what: string, line: number): number {
  if (!/^[0-9]+$/.test(text))
    throw new WireGuardError(`wg dump, line ${line}: ${what} "${text}" is not a number`);
  return Number(text);
}

/**
 * Reads `wg show NAME dump`: a line for the interface (private key, public key, listen port, fwmark),
 * then one per peer (public key, preshared key, endpoint, allowed IPs, latest handshake in seconds
 * since the epoch or 0, bytes received, bytes sent, persistent keepalive or `off`), tab-separated.
 * The private and preshared keys are not kept.
 */
export function parseWgDump(text: string): InterfaceState {
  const lines = text.split('\n').filter((line) => line.trim() !== '');
  const fieldsOf = (line: string, index: number, expected: number) => {
    const fields = line.replace(/\r$/, '').split('\t');
    if (fields.length !== expected) {
      const hint =
        fields.length === expected + 1
          ? ' (`wg show all dump` adds the interface name: use `wg show NAME dump`)'
          : '';
      throw new WireGuardError(
        `wg dump, line ${index + 1}: expected ${expected} tab-separated fields, found ${fields.length}${hint}`,
      );
    }
    return fields as [string, ...string[]];
  };
  const [first, ...peerLines] = lines;
  if (first === undefined) throw new WireGuardError('wg dump is empty: the interface line is missing');
  const [, publicKey, listenPort, fwmark] = fieldsOf(first, 0, 4);
  const state: InterfaceState = {
    publicKey: publicKey === NONE ? undefined : publicKey,
    listenPort: count(listenPort ?? '', 'listen port', 1),
    fwmark: fwmark === 'off' || fwmark === undefined ? undefined : Number(fwmark),
    peers: [],
  };
  peerLines.forEach((line, i) => {
    const [key, psk, endpoint, allowed, handshake, rx, tx, keepalive] = fieldsOf(line, i + 1, 8) as string[];
    const handshakeSeconds = count(handshake ?? '', 'latest handshake', i + 2);
    state.peers.push({
      publicKey: key ?? '',
      hasPresharedKey: psk !== NONE,
      endpoint: endpoint === NONE ? undefined : endpoint,
      allowedIps: allowed === NONE || allowed === '' ? [] : (allowed ?? '').split(','),
      latestHandshake: handshakeSeconds === 0 ? undefined : new Date(handshakeSeconds * 1000),
      rxBytes: count(rx ?? '', 'bytes received', i + 2),
      txBytes: count(tx ?? '', 'bytes sent', i + 2),
      persistentKeepalive: keepalive === 'off' ? undefined : count(keepalive ?? '', 'keepalive', i + 2),
    });
  });
  return state;
}

// ---- running ip and wg ----

async function run(command: string, args: string[]): Promise<string> {
  // No key is ever among the arguments, so the command line can be shown in full.
  const result = await execa(command, args, { reject: false, stdin: 'ignore', timeout: 30_000 });
  if (result.exitCode !== 0) {
    const why = `${result.stderr}`.trim() || `${result.stdout}`.trim() || `exit code ${result.exitCode}`;
    throw new WireGuardError(`${command} ${args.join(' ')}: ${why}`);
  }
  return `${result.stdout}`;
}

async function linkExists(name: string): Promise<boolean> {
  const result = await execa('ip', ['link', 'show', 'dev', name], { reject: false, stdin: 'ignore' });
  return result.exitCode === 0;
}

/** A key file must be a regular file the owner alone can read: mode 0600 (or 0400). */
export async function checkKeyFile(path: string, what: string): Promise<void> {
  let info;
  try {
    info = await stat(path);
  } catch (error) {
    throw new WireGuardError(`${what} ${path} cannot be read: ${(error as Error).message}`);
  }
  if (!info.isFile()) throw new WireGuardError(`${what} ${path} is not a file`);
  if ((info.mode & 0o077) !== 0) {
    throw new WireGuardError(
      `${what} ${path} has mode ${(info.mode & 0o777).toString(8).padStart(4, '0')}: it must be readable by its owner only (0600)`,
    );
  }
}

/** Writes a key (private or preshared) to a file of mode 0600, in a folder of mode 0700 if it makes one. */
export async function writeKeyFile(path: string, key: string): Promise<void> {
  if (!isValidKey(key)) throw new WireGuardError(`not a WireGuard key: refusing to write it to ${path}`);
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  await writeFileAtomic(path, `${key}\n`, { mode: 0o600 });
}

// ---- interfaces ----

export interface WireGuardLink {
  readonly name: string;
  readonly implementation: WireGuardImplementation;
  /** The wireguard-go process, when userspace. */
  readonly pid?: number;
  /**
   * Settles when the wireguard-go process ends, by `down()` or by itself (its interface is gone then);
   * never for the kernel's.
   */
  readonly exited: Promise<{ exitCode?: number; signal?: string }>;
  /** wireguard-go's last lines of output, for messages. */
  output(): string[];
  /** Removes the interface and stops the wireguard-go process behind it. Idempotent. */
  down(): Promise<void>;
}

export interface CreateOptions {
  /** `auto` (the default): the kernel's, else wireguard-go. */
  implementation?: 'auto' | WireGuardImplementation;
  /** Says which implementation is used and why, and passes on wireguard-go's output. */
  log?: (line: string) => void;
  /** How long wireguard-go may take to serve its control socket (default 10 s). */
  readyTimeoutMs?: number;
}

const OUTPUT_LINES = 40;

function kernelLink(name: string): WireGuardLink {
  return {
    name,
    implementation: 'kernel',
    exited: new Promise(() => undefined),
    output: () => [],
    down: async () => {
      if (await linkExists(name)) await run('ip', ['link', 'del', 'dev', name]);
    },
  };
}

async function startWireguardGo(name: string, options: CreateOptions): Promise<WireGuardLink> {
  const child = execa('wireguard-go', ['-f', name], {
    reject: false,
    stdin: 'ignore',
    all: true,
    buffer: false,
    env: {
      // What wireguard-go sets for the child it daemonizes: no banner urging the kernel module (old
      // versions even quit after it unless told they may run).
      WG_PROCESS_FOREGROUND: '1',
      // Errors only: a setup failure is said at this level; info would add lines on every start.
      LOG_LEVEL: 'error',
    },
  });
  const lines: string[] = [];
  let partial = '';
  child.all?.on('data', (chunk: Buffer) => {
    const text = partial + chunk.toString('utf8');
    const parts = text.split('\n');
    partial = parts.pop() ?? '';
    for (const line of parts) {
      if (line.trim() === '') continue;
      lines.push(line);
      if (lines.length > OUTPUT_LINES) lines.shift();
      options.log?.(`wireguard-go ${name}: ${line}`);
    }
  });
  let ended = false;
  const exited = child.then((result) => {
    ended = true;
    return { exitCode: result.exitCode, signal: result.signal };
  });
  const link: WireGuardLink = {
    name,
    implementation: 'wireguard-go',
    pid: child.pid,
    exited,
    output: () => [...lines],
    down: async () => {
      if (!ended) {
        // On SIGTERM wireguard-go closes the device: the TUN interface and the control socket go.
        child.kill('SIGTERM');
        const patience = new AbortController();
        const stopped = await Promise.race([
          exited.then(() => true),
          sleep(5_000, patience.signal).then(
            () => false,
            () => true,
          ),
        ]);
        patience.abort();
        if (!stopped) {
          child.kill('SIGKILL');
          await exited;
        }
      }
      if (await linkExists(name)) await run('ip', ['link', 'del', 'dev', name]);
    },
  };
  try {
    // Ready once `wg` can talk to it over the control socket.
    await poll(
      `wireguard-go to serve ${name}`,
      async () => {
        if (ended) {
          const { exitCode } = await exited;
          throw new PermanentError(
            `wireguard-go ${name} exited (${exitCode ?? 'signal'}) during start: ${lines.slice(-5).join(' | ') || 'no output'}`,
          );
        }
        const shown = await execa('wg', ['show', name, 'listen-port'], { reject: false, stdin: 'ignore' });
        return shown.exitCode === 0 ? true : undefined;
      },
      { timeoutMs: options.readyTimeoutMs ?? 10_000, intervalMs: 50 },
    );
  } catch (error) {
    await link.down().catch(() => undefined);
    throw new WireGuardError((error as Error).message, { cause: error });
  }
  return link;
}

/** Makes an empty WireGuard interface: the kernel's, or wireguard-go's where the kernel has none. */
export async function createInterface(name: string, options: CreateOptions = {}): Promise<WireGuardLink> {
  checkInterfaceName(name);
  if (await linkExists(name)) {
    throw new WireGuardError(`interface ${name} exists already: take it down first (deleteInterface)`);
  }
  const wanted = options.implementation ?? 'auto';
  let kernelRefusal = '';
  if (wanted !== 'wireguard-go') {
    const added = await execa('ip', ['link', 'add', 'dev', name, 'type', 'wireguard'], {
      reject: false,
      stdin: 'ignore',
    });
    if (added.exitCode === 0) {
      options.log?.(`${name}: the kernel's WireGuard`);
      return kernelLink(name);
    }
    kernelRefusal = `${added.stderr}`.trim() || `exit code ${added.exitCode}`;
    if (wanted === 'kernel') throw new WireGuardError(`the kernel has no WireGuard: ${kernelRefusal}`);
  }
  options.log?.(
    `${name}: wireguard-go (userspace)${kernelRefusal ? `, the kernel has no WireGuard: ${kernelRefusal}` : ''}`,
  );
  try {
    return await startWireguardGo(name, options);
  } catch (error) {
    const why = kernelRefusal ? ` (and the kernel has no WireGuard: ${kernelRefusal})` : '';
    throw new WireGuardError(`${(error as Error).message}${why}`, { cause: error });
  }
}

/** Everything about a configuration that can be checked before anything is made. */
async function checkInterfaceConfig(config: InterfaceConfig): Promise<void> {
  checkInterfaceName(config.name);
  if (config.listenPort !== undefined) checkPort(config.listenPort, 'listen port');
  if (config.mtu !== undefined && (!Number.isInteger(config.mtu) || config.mtu < 68 || config.mtu > 65535)) {
    throw new WireGuardError(`MTU ${config.mtu} is not an MTU: use 68-65535 (see wireGuardMtu)`);
  }
  for (const address of config.addresses ?? []) checkCidr(address, 'interface address');
  for (const route of config.routes ?? []) checkCidr(route, 'route');
  await checkKeyFile(config.privateKeyFile, 'private key file');
}

/** Sets the private key, listen port, MTU and addresses, brings the link up, then adds the routes. */
export async function configureInterface(config: InterfaceConfig): Promise<void> {
  await checkInterfaceConfig(config);
  const { name } = config;
  await run('wg', wgSetArgs(name, { privateKeyFile: config.privateKeyFile, listenPort: config.listenPort }));
  if (config.mtu !== undefined) await run('ip', ['link', 'set', 'dev', name, 'mtu', String(config.mtu)]);
  for (const address of config.addresses ?? []) {
    await run('ip', ['address', 'replace', address, 'dev', name]);
  }
  await run('ip', ['link', 'set', 'dev', name, 'up']);
  // Routes after the link is up: the kernel refuses a route through a link that is down.
  for (const route of config.routes ?? []) await run('ip', ['route', 'replace', route, 'dev', name]);
}

/** Creates and configures an interface; one that fails half-way is taken down again. */
export async function bringUp(config: InterfaceConfig, options: CreateOptions = {}): Promise<WireGuardLink> {
  // A configuration that cannot work is refused before an interface exists.
  await checkInterfaceConfig(config);
  const link = await createInterface(config.name, options);
  try {
    await configureInterface(config);
  } catch (error) {
    await link.down().catch(() => undefined);
    throw error;
  }
  return link;
}

/** Removes an interface by name (one this process has no link for, e.g. left by a crash). */
export async function deleteInterface(name: string): Promise<void> {
  checkInterfaceName(name);
  if (await linkExists(name)) await run('ip', ['link', 'del', 'dev', name]);
}

export async function showInterface(name: string): Promise<InterfaceState> {
  checkInterfaceName(name);
  return parseWgDump(await run('wg', ['show', name, 'dump']));
}

async function checkPeerKeyFiles(peers: Peer[]): Promise<void> {
  for (const peer of peers) {
    if (peer.presharedKeyFile !== undefined) await checkKeyFile(peer.presharedKeyFile, 'preshared key file');
  }
}

/** Adds the peers, or updates them in place (sessions survive); see the header for what is kept. */
export async function setPeers(name: string, peers: Peer[]): Promise<void> {
  const args = wgSetArgs(name, { peers });
  await checkPeerKeyFiles(peers);
  await run('wg', args);
}

export async function setPeer(name: string, peer: Peer): Promise<void> {
  await setPeers(name, [peer]);
}

export async function removePeer(name: string, publicKey: string): Promise<void> {
  await run('wg', wgSetArgs(name, { removePeers: [publicKey] }));
}

/** Makes the interface's peers exactly these: others are removed, these set, in one `wg set`. */
export async function syncPeers(name: string, peers: Peer[]): Promise<void> {
  const wanted = new Set(peers.map((p) => p.publicKey));
  const current = await showInterface(name);
  const removePeers = current.peers.map((p) => p.publicKey).filter((key) => !wanted.has(key));
  // `wg set NAME` with nothing after it is a usage error: nothing to do is nothing to run.
  if (peers.length === 0 && removePeers.length === 0) return;
  const args = wgSetArgs(name, { peers, removePeers });
  await checkPeerKeyFiles(peers);
  await run('wg', args);
}

/** Waits for a handshake with the peer newer than `since` (default: any), and returns the peer. */
export async function waitForHandshake(
  name: string,
  publicKey: string,
  options: { timeoutMs?: number; since?: Date } = {},
): Promise<PeerState> {
  return poll(
    `a WireGuard handshake on ${name} with ${publicKey}`,
    async () => {
      const peer = (await showInterface(name)).peers.find((p) => p.publicKey === publicKey);
      if (!peer) throw new WireGuardError(`${publicKey} is no peer of ${name}`);
      const handshake = peer.latestHandshake;
      if (!handshake) return undefined;
      return options.since && handshake.getTime() < Math.floor(options.since.getTime() / 1000) * 1000
        ? undefined
        : peer;
    },
    { timeoutMs: options.timeoutMs ?? 30_000, intervalMs: 200 },
  );
}
