// The contract for remote nodes, between the CLI on the cluster's host (`vind node add --remote`), the
// hub (node-agent role `hub`), the CLI on the remote machine (`vind join`) and the remote worker's
// agent: the hub's addresses and ports, the files the CLI writes into the hub, the enrollment call
// through the tunnel, and the join secret.
//
// Addresses: the hub sits at .103 of the cluster /24; remote nodes take host numbers from .102 down
// (local workers count up from .3). Each remote node's address is its WireGuard address and its node
// IP; the hub answers ARP for it on the cluster network (proxy ARP) and routes it, with the node's
// podCIDR, into the tunnel, so every local node and the control plane reach it as a neighbour.
//
// Enrollment: the secret carries a single-use enrollment key made for this one join. With it the
// remote reaches only the hub's enrollment address (169.254.77.1) from its own enrollment address
// (169.254.77.N), and sends the public key of the node key it made itself; from then on the tunnel
// uses that key, and the enrollment key opens nothing but an answer that it was used.

import { hostAddress, parseCidr } from './subnets.js';
import type { JoinInfo } from './contract.js';

export const HUB = {
  /** Host number of the hub on the cluster /24. */
  hostNumber: 103,
  /** Remote nodes count down from here. */
  firstRemoteHost: 102,
  lastRemoteHost: 60,
  interface: 'vind-wg',
  /** WireGuard's UDP port inside the hub container, published on the host. */
  listenPort: 51820,
  /** The tunnel-only subnet of enrollments: the hub is .1, enrollment N is .N (2-254). */
  enrollSubnet: '169.254.77.0/24',
  enrollAddress: '169.254.77.1',
  enrollPort: 7445,
  /** The hub's own state, in its volume. */
  stateDir: '/var/lib/vind/hub',
  privateKeyFile: '/var/lib/vind/hub/private.key',
  publicKeyFile: '/var/lib/vind/hub/public.key',
  /** One JSON file per pending enrollment (`Enrollment`), written by the CLI. */
  enrollmentsDir: '/var/lib/vind/hub/enrollments',
  /** One JSON file per enrolled node (`EnrolledNode`), written by the hub. */
  nodesDir: '/var/lib/vind/hub/nodes',
  keepaliveSeconds: 25,
} as const;

/** On the remote worker: its own key and what it learned at enrollment. */
export const REMOTE = {
  stateDir: '/var/lib/vind/remote',
  nodeKeyFile: '/var/lib/vind/remote/node.key',
  enrollmentKeyFile: '/var/lib/vind/remote/enrollment.key',
  /** `RemoteState`, written once enrolled. */
  stateFile: '/var/lib/vind/remote/state.json',
  settingsEnv: 'VIND_REMOTE',
} as const;

export function hubName(cluster: string): string {
  return `${cluster}-hub`;
}

export function hubAddress(clusterSubnet: string): string {
  return hostAddress(parseCidr(clusterSubnet), HUB.hostNumber);
}

/** The address of a remote node, the Nth counting down from .102, or undefined when none is left. */
export function remoteNodeAddress(clusterSubnet: string, taken: string[]): string | undefined {
  const cidr = parseCidr(clusterSubnet);
  for (let host = HUB.firstRemoteHost; host >= HUB.lastRemoteHost; host--) {
    const address = hostAddress(cidr, host);
    if (!taken.includes(address)) return address;
  }
  return undefined;
}

export function enrollAddress(index: number): string {
  if (!Number.isInteger(index) || index < 2 || index > 254) throw new Error(`enrollment index ${index}`);
  return `169.254.77.${index}`;
}

/** A pending enrollment, in HUB.enrollmentsDir/<id>.json. */
export interface Enrollment {
  id: string;
  /** The enrollment key's public half; the private half is in the secret only. */
  publicKey: string;
  /** 2-254: the remote's tunnel address while it enrolls is 169.254.77.<index>. */
  index: number;
  node: string;
  address: string;
  /** RFC 3339. */
  expires: string;
  labels: Record<string, string>;
  taints: string[];
  join: JoinInfo;
  imageCache?: { address: string; token: string };
  /** Where the hub dials the node (`HOST:PORT`), for a remote that listens; absent: the node dials. */
  dial?: string;
  /** Set by the hub when the secret was used. */
  usedAt?: string;
  /** Set by `vind node remove`: the key still reaches the hub until it expires, to be told so. */
  revokedAt?: string;
}

/** An enrolled remote node, in HUB.nodesDir/<node>.json. */
export interface EnrolledNode {
  node: string;
  address: string;
  /** The node's own key, made on the remote. */
  publicKey: string;
  enrolledAt: string;
  /** Where the hub dials it, when it listens. */
  dial?: string;
}

/** POST http://169.254.77.1:7445/v1/enroll, through the tunnel. */
export interface EnrollRequest {
  id: string;
  publicKey: string;
}

export interface EnrollAnswer {
  node: string;
  address: string;
  join: JoinInfo;
  labels: Record<string, string>;
  taints: string[];
  imageCache?: { address: string; token: string };
  /** What the tunnel carries: the cluster network, the pods and the Services. */
  routes: string[];
}

/** What the remote worker keeps once enrolled, to come back after a restart without the secret. */
export interface RemoteState {
  hubPublicKey: string;
  /** The hub endpoint that answered; absent when the hub dials. */
  hubEndpoint?: string;
  answer: EnrollAnswer;
}

/** What the CLI on the remote gives the worker it starts (REMOTE.settingsEnv, JSON). */
export interface RemoteSettings {
  cluster: string;
  hubEndpoints: string[];
  hubPublicKey: string;
  enrollmentId: string;
  enrollmentIndex: number;
  /** The node listens on HUB.listenPort (published by `vind join`) and waits for the hub to dial. */
  listen?: boolean;
}

/** Everything `vind join` needs, in one line the user copies. */
export interface JoinSecret {
  cluster: string;
  node: string;
  address: string;
  hubEndpoints: string[];
  hubPublicKey: string;
  enrollmentId: string;
  enrollmentIndex: number;
  /** The single-use enrollment key (private). */
  enrollmentKey: string;
  expires: string;
  image: string;
  clusterSubnet: string;
  podSubnet: string;
  serviceSubnet: string;
  /** The hub dials the node: `vind join` publishes the node's WireGuard port on this UDP port. */
  listenPort?: number;
}

const SECRET_PREFIX = 'vindjoin1.';

export function encodeJoinSecret(secret: JoinSecret): string {
  return `${SECRET_PREFIX}${Buffer.from(JSON.stringify(secret)).toString('base64url')}`;
}

export function decodeJoinSecret(text: string): JoinSecret {
  const how = 'copy the whole `vind join ...` line that `vind node add NAME --remote` printed';
  if (!text.startsWith(SECRET_PREFIX)) throw new Error(`this is not a join secret: ${how}`);
  let secret: JoinSecret;
  try {
    secret = JSON.parse(Buffer.from(text.slice(SECRET_PREFIX.length), 'base64url').toString('utf8'));
  } catch {
    throw new Error(`the join secret is damaged: ${how}`);
  }
  const strings: (keyof JoinSecret)[] = [
    'cluster',
    'node',
    'address',
    'hubPublicKey',
    'enrollmentId',
    'enrollmentKey',
    'expires',
    'image',
    'clusterSubnet',
    'podSubnet',
    'serviceSubnet',
  ];
  if (
    strings.some((key) => typeof secret[key] !== 'string') ||
    !Array.isArray(secret.hubEndpoints) ||
    !Number.isInteger(secret.enrollmentIndex)
  ) {
    throw new Error(`the join secret is damaged: ${how}`);
  }
  return secret;
}
