// IPv4 CIDR arithmetic for choosing a cluster's Docker network and the addresses inside it.
// Addresses are kept as unsigned 32-bit numbers; every bitwise result goes through `>>> 0` because
// JavaScript's bitwise operators yield signed values (128.0.0.0 and above would turn negative).

export interface Cidr {
  network: number;
  prefix: number;
}

const OCTET = /^(0|[1-9][0-9]{0,2})$/;

export function ipToInt(ip: string): number {
  const parts = ip.split('.');
  if (parts.length !== 4 || !parts.every((part) => OCTET.test(part) && Number(part) <= 255)) {
    throw new Error(
      `invalid IPv4 address "${ip}": use four numbers from 0 to 255 separated by dots, e.g. 10.0.0.1`,
    );
  }
  return parts.reduce((value, part) => value * 256 + Number(part), 0);
}

export function intToIp(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new Error(`not an IPv4 address value: ${n}`);
  return [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff].join('.');
}

function maskOf(prefix: number): number {
  // A shift by 32 is a shift by 0 in JavaScript, so /0 needs its own case.
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

function sizeOf(cidr: Cidr): number {
  return 2 ** (32 - cidr.prefix);
}

function splitCidr(text: string): { ip: number; prefix: number } {
  const match = /^([0-9.]+)\/(0|[1-9][0-9]?)$/.exec(text.trim());
  const prefix = match ? Number(match[2]) : NaN;
  if (!match || prefix > 32) {
    throw new Error(
      `invalid CIDR "${text}": use an IPv4 network and a prefix length 0-32, e.g. 10.244.0.0/16`,
    );
  }
  let ip: number;
  try {
    ip = ipToInt(match[1] ?? '');
  } catch {
    throw new Error(`invalid CIDR "${text}": "${match[1]}" is not an IPv4 address; use e.g. 10.244.0.0/16`);
  }
  return { ip, prefix };
}

/** Strict: the address must be the network address of its prefix, so a typo cannot silently widen a range. */
export function parseCidr(text: string): Cidr {
  const { ip, prefix } = splitCidr(text);
  const network = (ip & maskOf(prefix)) >>> 0;
  if (network !== ip) {
    const fixed = formatCidr({ network, prefix });
    throw new Error(
      `invalid CIDR "${text}": ${intToIp(ip)} is not the network address of a /${prefix}; use ${fixed}`,
    );
  }
  return { network, prefix };
}

export function formatCidr(cidr: Cidr): string {
  return `${intToIp(cidr.network)}/${cidr.prefix}`;
}

export function overlaps(a: Cidr, b: Cidr): boolean {
  // Two aligned blocks overlap exactly when one contains the other: compare under the shorter prefix.
  const mask = maskOf(Math.min(a.prefix, b.prefix));
  return (a.network & mask) >>> 0 === (b.network & mask) >>> 0;
}

export function contains(cidr: Cidr, ip: string): boolean {
  const mask = maskOf(cidr.prefix);
  return (ipToInt(ip) & mask) >>> 0 === (cidr.network & mask) >>> 0;
}

/** The index-th address of the subnet, counting the network address as 0 (so 1 is the gateway). */
export function hostAddress(cidr: Cidr, index: number): string {
  if (!Number.isInteger(index) || index < 0 || index >= sizeOf(cidr)) {
    throw new Error(`address index ${index} is outside ${formatCidr(cidr)} (0 to ${sizeOf(cidr) - 1})`);
  }
  return intToIp(cidr.network + index);
}

/**
 * Subnets Docker reports may carry host bits (or be IPv6, which cannot collide with IPv4 candidates);
 * they are taken as the whole block they lie in.
 */
function parseTaken(text: string): Cidr | undefined {
  if (text.includes(':')) return undefined;
  const { ip, prefix } = splitCidr(text.includes('/') ? text : `${text}/32`);
  return { network: (ip & maskOf(prefix)) >>> 0, prefix };
}

// Blocks Docker's default address pools (172.17-172.28, 192.168) leave alone.
const CANDIDATE_BLOCKS = [
  '172.30.0.0/16',
  '172.31.0.0/16',
  ...Array.from({ length: 10 }, (_, i) => `10.${210 + i}.0.0/16`),
];

/**
 * First /24 in the candidate pool 172.30.0.0/16, then 172.31.0.0/16, then 10.210.0.0/16..10.219.0.0/16,
 * that overlaps none of `taken` (existing Docker network subnets and the cluster's pod and service subnets).
 */
export function pickClusterSubnet(taken: string[]): string {
  const used = taken.flatMap((text) => parseTaken(text) ?? []);
  for (const block of CANDIDATE_BLOCKS) {
    const parent = parseCidr(block);
    // Skipping a block that is covered whole saves 256 checks per taken /16 or /8.
    if (used.some((cidr) => cidr.prefix <= parent.prefix && overlaps(cidr, parent))) continue;
    for (let i = 0; i < 256; i++) {
      const candidate: Cidr = { network: parent.network + i * 256, prefix: 24 };
      if (!used.some((cidr) => overlaps(cidr, candidate))) return formatCidr(candidate);
    }
  }
  throw new Error(
    `no free /24 for the cluster network in ${CANDIDATE_BLOCKS[0]}, ${CANDIDATE_BLOCKS[1]} or 10.210.0.0/16-10.219.0.0/16: ` +
      'remove unused Docker networks (docker network prune) and try again',
  );
}

export const MAX_PLANNED_WORKERS = 100;

export interface ClusterAddressPlan {
  gateway: string;
  controlPlane: string;
  /** Address of the worker at `index` (0-based), .3 upward. */
  worker(index: number): string;
  /** Docker's IPAM ip-range for containers that get no fixed address. */
  dynamicRange: string;
  /** LoadBalancer addresses from host number `first` to `last` (within 128-254), inclusive. */
  loadBalancerRange(first?: number, last?: number): { first: string; last: string };
}

/**
 * Address layout inside a cluster /24: gateway .1, control plane .2, workers .3 upward (max 100 workers),
 * Docker's dynamic range .112-.127 for containers without a fixed address (shared services), kept apart
 * from the node addresses so a late joiner never takes a worker's address, and LoadBalancer addresses
 * in the upper half (.128-.254), which Docker never hands out.
 */
export function clusterAddressPlan(subnet: string): ClusterAddressPlan {
  const cidr = parseCidr(subnet);
  if (cidr.prefix !== 24) throw new Error(`cluster subnet ${subnet} must be a /24`);
  return {
    gateway: hostAddress(cidr, 1),
    controlPlane: hostAddress(cidr, 2),
    worker(index: number): string {
      if (!Number.isInteger(index) || index < 0 || index >= MAX_PLANNED_WORKERS) {
        throw new Error(`worker index ${index} is outside 0 to ${MAX_PLANNED_WORKERS - 1}`);
      }
      return hostAddress(cidr, 3 + index);
    },
    dynamicRange: formatCidr({ network: cidr.network + 112, prefix: 28 }),
    loadBalancerRange(first = 128, last = 254) {
      if (!(first >= 128 && first <= last && last <= 254)) {
        throw new Error(`LoadBalancer range ${first}-${last} is outside 128-254`);
      }
      return { first: hostAddress(cidr, first), last: hostAddress(cidr, last) };
    },
  };
}

export interface BridgeNetworkFacts {
  /** The network's IPv4 subnet, as Docker reports it. */
  subnet: string;
  /** The gateway, when Docker reports one: a brand-new engine lists none for its default bridge. */
  gateway?: string;
  /** IPv4 addresses of the network's bridge interface on the host, when the engine is local. */
  bridgeAddresses: string[];
}

/**
 * The host's own address on a Docker bridge network, where services on the host are reached from
 * containers on it. Docker does not always report the gateway (a fresh engine's default bridge has
 * none listed although docker0 carries it), so: the reported gateway, else the bridge interface's
 * address inside the subnet, else the subnet's first address, where Docker's IPAM puts the gateway.
 */
export function hostAddressOnBridge(facts: BridgeNetworkFacts): string {
  if (facts.gateway) return facts.gateway;
  const taken = parseTaken(facts.subnet);
  if (!taken) throw new Error(`Docker network subnet ${facts.subnet} is not IPv4`);
  const onBridge = facts.bridgeAddresses.find((address) => contains(taken, address));
  return onBridge ?? hostAddress(taken, 1);
}
