// Role `hub`: a cluster's WireGuard hub (shared/remote-nodes.ts has the contract). One container per
// cluster with remote nodes, at .103 of the cluster network, publishing one UDP port on the host; it
// holds NET_ADMIN and the TUN device, nothing else.
//
// - Its key is made here at the first start and kept on its volume; peers learn its public half.
// - Peers are exactly what its files say: each pending enrollment (written by `vind node add
//   --remote`) by its enrollment key, allowed only its enrollment address; each enrolled node by its
//   own key, allowed its address and its podCIDR (from the Node object). A key it did not enroll
//   gets nothing through.
// - Enrollment is an HTTP call on the hub's enrollment address, reachable only through the tunnel;
//   nothing but WireGuard listens on the published port.
// - Routing: each remote node's address is routed into the tunnel, and the hub answers ARP for it on
//   the cluster network (proxy ARP), so local nodes and the control plane reach remote nodes as
//   neighbours; pod routes for every node are kept as on any node; TCP is clamped to the tunnel's MTU.
//   The safety net refuses pod and Service traffic that nothing routes.

import { randomInt } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { execa } from 'execa';
import { writeFileAtomic } from '../shared/atomic-write.js';
import { ADMIN_KUBECONFIG } from '../shared/contract.js';
import {
  internalIp,
  type KubeNode,
  kubePost,
  targetFromKubeconfig,
  watchCollection,
} from '../shared/kubernetes.js';
import {
  type EnrollAnswer,
  enrollAddress,
  type EnrolledNode,
  type Enrollment,
  type EnrollRequest,
  HUB,
} from '../shared/remote-nodes.js';
import { generateKeyPair, isValidKey } from '../vpn/keys.js';
import { bringUp, type Peer, syncPeers, wireGuardMtu, type WireGuardLink } from '../vpn/wireguard.js';
import { log } from './log.js';
import { type BootstrapToken, bootstrapTokenSecret } from './manifests.js';
import { keepPodRoutes } from './pod-routes.js';
import { reconciler } from './reconciler.js';
import { installSafetyNet } from './safety-net.js';
import { setStatus } from './status.js';
import type { Supervisor } from './supervisor.js';
import { mssClamp } from './iptables.js';

/** What the hub is told in its environment (VIND_HUB, JSON). */
export interface HubSettings {
  cluster: string;
  clusterSubnet: string;
  podSubnet: string;
  serviceSubnet: string;
}

export const HUB_ENV = 'VIND_HUB';

function tokenPart(length: number): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789';
  return Array.from({ length }, () => alphabet[randomInt(alphabet.length)]).join('');
}

async function readJsonDir<T>(dir: string): Promise<T[]> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const out: T[] = [];
  for (const name of names.filter((n) => n.endsWith('.json'))) {
    try {
      out.push(JSON.parse(await readFile(join(dir, name), 'utf8')) as T);
    } catch {
      // half-written by someone else: the next pass reads it
    }
  }
  return out;
}

/** The hub's peers: pending enrollments and enrolled nodes with their podCIDRs. */
export function wantedPeers(
  enrollments: Enrollment[],
  nodes: EnrolledNode[],
  podCidrs: Map<string, string[]>,
  now: number,
): Peer[] {
  const peers: Peer[] = [];
  // A node that listens is dialled, and kept open from this side.
  const dialled = (dial?: string) =>
    dial ? { endpoint: dial, persistentKeepalive: HUB.keepaliveSeconds } : {};
  for (const e of enrollments) {
    if (Date.parse(e.expires) <= now) continue;
    peers.push({
      publicKey: e.publicKey,
      allowedIps: [`${enrollAddress(e.index)}/32`],
      // Spent, it is no longer dialled: the node answers to its own key now.
      ...dialled(e.usedAt || e.revokedAt ? undefined : e.dial),
    });
  }
  for (const n of nodes) {
    peers.push({
      publicKey: n.publicKey,
      allowedIps: [`${n.address}/32`, ...(podCidrs.get(n.node) ?? [])],
      ...dialled(n.dial),
    });
  }
  return peers;
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

async function readRequest(req: IncomingMessage): Promise<EnrollRequest> {
  let text = '';
  for await (const chunk of req) {
    text += (chunk as Buffer).toString();
    if (text.length > 4096) throw new Error('the enrollment request is too large');
  }
  const body = JSON.parse(text) as EnrollRequest;
  if (typeof body.id !== 'string' || !/^[a-f0-9]{16,64}$/.test(body.id) || !isValidKey(body.publicKey)) {
    throw new Error('the enrollment request needs an id and a WireGuard public key');
  }
  return body;
}

export async function runHub(_supervisor: Supervisor, signal: AbortSignal): Promise<void> {
  const text = process.env[HUB_ENV];
  if (!text) throw new Error(`${HUB_ENV} is not set: the hub cannot start without it`);
  const settings = JSON.parse(text) as HubSettings;
  await mkdir(HUB.enrollmentsDir, { recursive: true });
  await mkdir(HUB.nodesDir, { recursive: true });
  if (!existsSync(HUB.privateKeyFile)) {
    const pair = generateKeyPair();
    await writeFileAtomic(HUB.privateKeyFile, `${pair.privateKey}\n`, { mode: 0o600 });
    await writeFileAtomic(HUB.publicKeyFile, `${pair.publicKey}\n`);
  }
  await installSafetyNet(settings);
  const eth0Mtu = Number((await readFile('/sys/class/net/eth0/mtu', 'utf8').catch(() => '1500')).trim());
  const link: WireGuardLink = await bringUp(
    {
      name: HUB.interface,
      privateKeyFile: HUB.privateKeyFile,
      listenPort: HUB.listenPort,
      addresses: [`${HUB.enrollAddress}/24`],
      mtu: wireGuardMtu(eth0Mtu || 1500),
    },
    { log: (line) => log(`wireguard: ${line}`) },
  );
  signal.addEventListener('abort', () => void link.down());
  await mssClamp(HUB.interface);

  const target = targetFromKubeconfig(await readFile(ADMIN_KUBECONFIG, 'utf8'));
  const podCidrs = new Map<string, string[]>();
  const routed = new Set<string>();
  const podRouted = new Map<string, string>();
  const sync = reconciler(
    async () => {
      const now = Date.now();
      const enrollments = await readJsonDir<Enrollment>(HUB.enrollmentsDir);
      const nodes = await readJsonDir<EnrolledNode>(HUB.nodesDir);
      // An expired enrollment is of no use to anyone: its key opens nothing from then on.
      for (const e of enrollments.filter((x) => Date.parse(x.expires) <= now)) {
        await rm(join(HUB.enrollmentsDir, `${e.id}.json`), { force: true });
      }
      await syncPeers(HUB.interface, wantedPeers(enrollments, nodes, podCidrs, now));
      const wanted = new Set(nodes.map((n) => n.address));
      for (const address of wanted) {
        if (routed.has(address)) continue;
        await execa('ip', ['route', 'replace', `${address}/32`, 'dev', HUB.interface]);
        routed.add(address);
        log(`remote node ${address} routed into the tunnel`);
      }
      for (const address of [...routed]) {
        if (wanted.has(address)) continue;
        await execa('ip', ['route', 'del', `${address}/32`], { reject: false });
        routed.delete(address);
      }
      // A remote node's pods go into the tunnel too. The pod routes' own watch may have put them in
      // before the node's address was routed, and then the kernel chose eth0: say the device here.
      for (const n of nodes) {
        for (const cidr of podCidrs.get(n.node) ?? []) {
          if (podRouted.get(cidr) === n.address) continue;
          await execa('ip', ['route', 'replace', cidr, 'via', n.address, 'dev', HUB.interface]);
          podRouted.set(cidr, n.address);
        }
      }
    },
    { logPrefix: 'hub peers', retryMs: 2000, signal },
  );
  const timer = setInterval(sync, 1000);
  signal.addEventListener('abort', () => clearInterval(timer));
  sync();

  const server = createServer((req, res) => {
    void (async () => {
      if (req.method !== 'POST' || req.url !== '/v1/enroll') {
        reply(res, 404, { message: 'the hub takes POST /v1/enroll only' });
        return;
      }
      let body: EnrollRequest;
      try {
        body = await readRequest(req);
      } catch (error) {
        reply(res, 400, { message: (error as Error).message });
        return;
      }
      const file = join(HUB.enrollmentsDir, `${body.id}.json`);
      const enrollment = existsSync(file)
        ? (JSON.parse(await readFile(file, 'utf8')) as Enrollment)
        : undefined;
      const how = `make a new one with \`vind node add ${enrollment?.node ?? 'NAME'} --remote\` on the cluster's host`;
      if (!enrollment) {
        reply(res, 404, {
          message: `this join secret is unknown to the hub (removed, or its node was): ${how}`,
        });
        return;
      }
      // WireGuard only lets the enrollment key's packets in from its own address: this is that key.
      const from = (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
      if (from !== enrollAddress(enrollment.index)) {
        reply(res, 403, { message: 'this enrollment belongs to another join secret' });
        return;
      }
      if (enrollment.revokedAt) {
        reply(res, 410, {
          message: `this join secret was revoked when its node was removed (at ${enrollment.revokedAt}): ${how}`,
        });
        return;
      }
      if (enrollment.usedAt) {
        reply(res, 410, { message: `this join secret was used already (at ${enrollment.usedAt}): ${how}` });
        return;
      }
      if (Date.parse(enrollment.expires) <= Date.now()) {
        reply(res, 410, { message: `this join secret expired at ${enrollment.expires}: ${how}` });
        return;
      }
      const node: EnrolledNode = {
        node: enrollment.node,
        address: enrollment.address,
        publicKey: body.publicKey,
        enrolledAt: new Date().toISOString(),
        ...(enrollment.dial ? { dial: enrollment.dial } : {}),
      };
      await writeFileAtomic(join(HUB.nodesDir, `${node.node}.json`), `${JSON.stringify(node, null, 2)}\n`);
      await writeFileAtomic(
        file,
        `${JSON.stringify({ ...enrollment, usedAt: node.enrolledAt }, null, 2)}\n`,
        {
          mode: 0o600,
        },
      );
      sync();
      // A bootstrap token of its own, for an hour: the node joins with it as local workers do.
      const token: BootstrapToken = {
        id: tokenPart(6),
        secret: tokenPart(16),
        expiration: new Date(Date.now() + 3600_000).toISOString().replace(/\.\d+Z$/, 'Z'),
      };
      await kubePost(target, '/api/v1/namespaces/kube-system/secrets', bootstrapTokenSecret(token));
      const answer: EnrollAnswer = {
        node: enrollment.node,
        address: enrollment.address,
        join: { ...enrollment.join, token: `${token.id}.${token.secret}`, expiration: token.expiration },
        labels: enrollment.labels,
        taints: enrollment.taints,
        imageCache: enrollment.imageCache,
        routes: [settings.clusterSubnet, settings.podSubnet, settings.serviceSubnet],
      };
      log(`enrolled ${node.node} (${node.address}) with key ${node.publicKey}`);
      reply(res, 200, answer);
    })().catch((error: Error) => {
      if (!res.headersSent) reply(res, 500, { message: error.message });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(HUB.enrollPort, HUB.enrollAddress, () => resolve());
  });
  signal.addEventListener('abort', () => server.close());

  keepPodRoutes(target, undefined, signal);
  watchCollection<KubeNode>(
    target,
    '/api/v1/nodes',
    (list) => {
      podCidrs.clear();
      for (const n of list) {
        const cidrs = n.spec.podCIDRs ?? (n.spec.podCIDR ? [n.spec.podCIDR] : []);
        if (internalIp(n) && cidrs.length > 0) podCidrs.set(n.metadata.name, cidrs);
      }
      sync();
    },
    (error) => log(`watching nodes: ${error.message.split('\n')[0]}`),
    signal,
  );
  await setStatus('ready', `hub of ${settings.cluster} on UDP ${HUB.listenPort}`);
}
