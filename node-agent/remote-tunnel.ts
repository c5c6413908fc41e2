// A remote worker's tunnel to its cluster's hub (shared/remote-nodes.ts has the contract).
//
// First start: the interface comes up with the secret's single-use enrollment key on the enrollment
// address; each hub endpoint the secret names is tried until a handshake answers; the node's own key
// is made here, and its public half sent to the hub's enrollment address through the tunnel. The hub
// answers with what the node needs to join (the API server, a bootstrap token, the image cache), and
// from then on knows the node by its own key. The interface is made again with that key, the node's
// address and the routes of the cluster, and the enrollment key is deleted.
//
// Later starts: the state kept on the node's volume brings the same tunnel back without the secret.
// The node keeps the NAT mapping on its way to the hub open with keepalives; WireGuard follows the
// node when its address changes (roaming), since the node is the one that sends first.

import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { request } from 'node:http';
import { writeFileAtomic } from '../shared/atomic-write.js';
import { PermanentError } from '../shared/poll.js';
import {
  type EnrollAnswer,
  enrollAddress,
  type EnrollRequest,
  HUB,
  REMOTE,
  type RemoteSettings,
  type RemoteState,
} from '../shared/remote-nodes.js';
import { generateKeyPair, publicKeyOf } from '../vpn/keys.js';
import { bringUp, waitForHandshake, type WireGuardLink, setPeers, wireGuardMtu } from '../vpn/wireguard.js';
import { log } from './log.js';

let link: WireGuardLink | undefined;

async function linkMtu(): Promise<number> {
  const text = await readFile('/sys/class/net/eth0/mtu', 'utf8').catch(() => '1500');
  return wireGuardMtu(Number(text.trim()) || 1500);
}

async function up(
  privateKeyFile: string,
  address: string,
  routes: string[],
  listen?: boolean,
): Promise<WireGuardLink> {
  await link?.down().catch(() => undefined);
  link = await bringUp(
    {
      name: HUB.interface,
      privateKeyFile,
      addresses: [`${address}/32`],
      routes,
      mtu: await linkMtu(),
      // A node the hub dials listens where `vind join` published it.
      ...(listen ? { listenPort: HUB.listenPort } : {}),
    },
    { log: (line) => log(`wireguard: ${line}`) },
  );
  return link;
}

function enroll(settings: RemoteSettings, body: EnrollRequest): Promise<EnrollAnswer> {
  const payload = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: HUB.enrollAddress,
        port: HUB.enrollPort,
        localAddress: enrollAddress(settings.enrollmentIndex),
        method: 'POST',
        path: '/v1/enroll',
        headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(payload) },
        timeout: 15_000,
      },
      (res) => {
        let text = '';
        res.on('data', (chunk: Buffer) => (text += chunk.toString()));
        res.on('end', () => {
          let parsed: EnrollAnswer & { message?: string };
          try {
            parsed = JSON.parse(text) as EnrollAnswer & { message?: string };
          } catch {
            reject(new Error(`the hub answered ${res.statusCode}: ${text.slice(0, 200)}`));
            return;
          }
          if (res.statusCode === 200) resolve(parsed);
          // Used, expired or unknown: nothing a retry changes.
          else if (res.statusCode === 410 || res.statusCode === 404 || res.statusCode === 403)
            reject(
              new PermanentError(parsed.message ?? `the hub refused the enrollment (${res.statusCode})`),
            );
          else reject(new Error(parsed.message ?? `the hub answered ${res.statusCode}`));
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('the hub did not answer the enrollment in 15 s')));
    req.on('error', reject);
    req.end(payload);
  });
}

function hubPeer(publicKey: string, endpoint: string | undefined, allowedIps: string[]) {
  return {
    publicKey,
    ...(endpoint ? { endpoint } : {}),
    allowedIps,
    persistentKeepalive: HUB.keepaliveSeconds,
  };
}

/** Tries each hub endpoint in turn until one answers a handshake; answers the one that did. */
async function reachHub(settings: RemoteSettings, allowedIps: string[]): Promise<string | undefined> {
  const deadline = Date.now() + 120_000;
  if (settings.listen) {
    // The hub dials: wait for its handshake.
    await setPeers(HUB.interface, [hubPeer(settings.hubPublicKey, undefined, allowedIps)]);
    try {
      await waitForHandshake(HUB.interface, settings.hubPublicKey, { timeoutMs: 120_000 });
      return undefined;
    } catch {
      throw new PermanentError(
        `the hub did not dial this machine in 2 minutes: check that the address given to \`vind node add --dial\` reaches this machine's UDP port ${HUB.listenPort} as published by \`vind join\``,
      );
    }
  }
  for (;;) {
    for (const endpoint of settings.hubEndpoints) {
      await setPeers(HUB.interface, [hubPeer(settings.hubPublicKey, endpoint, allowedIps)]);
      try {
        await waitForHandshake(HUB.interface, settings.hubPublicKey, { timeoutMs: 7_000 });
        return endpoint;
      } catch {
        log(`no handshake with the hub at ${endpoint}`);
      }
    }
    if (Date.now() > deadline) {
      // Final: `vind join` then says so and takes the node away again, rather than waiting on.
      throw new PermanentError(
        `no answer from the hub at ${settings.hubEndpoints.join(', ')}: check that this machine reaches one of them over UDP, or give the hub's address with \`vind node add --remote --endpoint HOST:PORT\``,
      );
    }
  }
}

/** Brings the tunnel up (enrolling the first time) and answers what the node joins with. */
export async function remoteTunnel(settings: RemoteSettings, nodeAddress: string): Promise<EnrollAnswer> {
  if (existsSync(REMOTE.stateFile)) {
    const state = JSON.parse(await readFile(REMOTE.stateFile, 'utf8')) as RemoteState;
    await up(REMOTE.nodeKeyFile, nodeAddress, state.answer.routes, settings.listen);
    await setPeers(HUB.interface, [hubPeer(state.hubPublicKey, state.hubEndpoint, state.answer.routes)]);
    log(
      `tunnel to the hub ${state.hubEndpoint ? `at ${state.hubEndpoint}` : 'that dials here'} as ${nodeAddress}`,
    );
    return state.answer;
  }
  if (!existsSync(REMOTE.enrollmentKeyFile)) {
    throw new PermanentError(
      'this node has neither its state nor an enrollment key: join again with a new secret',
    );
  }
  const enrolling = enrollAddress(settings.enrollmentIndex);
  await up(REMOTE.enrollmentKeyFile, enrolling, [`${HUB.enrollAddress}/32`], settings.listen);
  const endpoint = await reachHub(settings, [`${HUB.enrollAddress}/32`]);
  log(`reached the hub${endpoint ? ` at ${endpoint}` : ' (it dialled)'}; enrolling`);
  if (!existsSync(REMOTE.nodeKeyFile)) {
    await writeFileAtomic(REMOTE.nodeKeyFile, `${generateKeyPair().privateKey}\n`, {
      mode: 0o600,
      createDirectory: true,
    });
  }
  const publicKey = publicKeyOf((await readFile(REMOTE.nodeKeyFile, 'utf8')).trim());
  const answer = await enroll(settings, { id: settings.enrollmentId, publicKey });
  const state: RemoteState = { hubPublicKey: settings.hubPublicKey, hubEndpoint: endpoint, answer };
  await writeFileAtomic(REMOTE.stateFile, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  await rm(REMOTE.enrollmentKeyFile, { force: true });
  await up(REMOTE.nodeKeyFile, nodeAddress, answer.routes, settings.listen);
  await setPeers(HUB.interface, [hubPeer(settings.hubPublicKey, endpoint, answer.routes)]);
  await waitForHandshake(HUB.interface, settings.hubPublicKey, { timeoutMs: 30_000, since: new Date() });
  log(`enrolled as ${answer.node} (${nodeAddress}) through the hub${endpoint ? ` at ${endpoint}` : ''}`);
  return answer;
}
