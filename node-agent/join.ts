// The `kubeadm join` contract for workers: {server, bootstrap token, CA hash}. The worker reads
// cluster-info without trusting the connection, checks that it was signed with the token (the
// bootstrap signer's detached JWS) and that its CA matches the pinned hash, and from then on
// trusts that CA only.

import { createHmac, timingSafeEqual } from 'node:crypto';
import { parse } from 'yaml';
import type { JoinInfo } from '../shared/contract.js';
import { kubeGet } from '../shared/kubernetes.js';
import { PermanentError, poll } from '../shared/poll.js';
import { parseBootstrapToken } from './manifests.js';
import { caCertHash } from './pki.js';

/** What a worker needs to join: the contract's join information, expiry aside. */
export type JoinConfig = Pick<JoinInfo, 'server' | 'token' | 'caCertHash'>;

export interface Discovered {
  server: string;
  caCertPem: string;
}

function base64url(data: string | Buffer): string {
  return Buffer.from(data).toString('base64url');
}

/** Checks a detached JWS ("header..signature", HS256) over the payload, keyed with the token's secret part. */
export function verifyDetachedJws(jws: string, payload: string, token: string): boolean {
  const [header, empty, signature] = jws.split('.');
  if (header === undefined || empty !== '' || !signature) return false;
  let parsed: { alg?: string; kid?: string };
  try {
    parsed = JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as typeof parsed;
  } catch {
    return false;
  }
  if (parsed.alg !== 'HS256') return false;
  const { secret } = parseBootstrapToken(token);
  const expected = createHmac('sha256', secret)
    .update(`${header}.${base64url(payload)}`)
    .digest();
  const actual = Buffer.from(signature, 'base64url');
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

/** Signs like the bootstrap signer of the controller manager does. */
export function signDetachedJws(payload: string, token: string): string {
  const { id, secret } = parseBootstrapToken(token);
  const header = base64url(JSON.stringify({ alg: 'HS256', kid: id }));
  const signature = createHmac('sha256', secret)
    .update(`${header}.${base64url(payload)}`)
    .digest('base64url');
  return `${header}..${signature}`;
}

interface ClusterInfoKubeconfig {
  clusters?: { cluster?: { server?: string; 'certificate-authority-data'?: string } }[];
}

/** Validates a cluster-info ConfigMap's data against the join configuration. Pure. */
export function validateClusterInfo(data: Record<string, string>, join: JoinConfig): Discovered {
  const { id } = parseBootstrapToken(join.token);
  const kubeconfig = data.kubeconfig;
  if (!kubeconfig) throw new Error('cluster-info has no kubeconfig');
  const jws = data[`jws-kubeconfig-${id}`];
  if (!jws) throw new Error(`cluster-info is not signed for token ${id} yet`);
  if (!verifyDetachedJws(jws, kubeconfig, join.token)) {
    throw new Error('cluster-info signature does not match the bootstrap token');
  }
  const cluster = (parse(kubeconfig) as ClusterInfoKubeconfig).clusters?.[0]?.cluster;
  const caData = cluster?.['certificate-authority-data'];
  if (!caData || !cluster?.server) throw new Error('cluster-info names no server or CA');
  const caCertPem = Buffer.from(caData, 'base64').toString('utf8');
  const hash = caCertHash(caCertPem);
  if (hash !== join.caCertHash) {
    throw new Error(`the cluster CA has hash ${hash}, not the pinned ${join.caCertHash}`);
  }
  return { server: join.server, caCertPem };
}

/** Fetches and checks cluster-info; retries while the signer has not signed it yet. */
export async function discover(join: JoinConfig, timeoutMs = 120_000): Promise<Discovered> {
  const path = '/api/v1/namespaces/kube-public/configmaps/cluster-info';
  try {
    return await poll(
      'cluster-info',
      async () => {
        const configMap = await kubeGet<{ data?: Record<string, string> }>(
          { server: join.server, insecureSkipVerify: true },
          path,
        );
        let discovered: Discovered;
        try {
          discovered = validateClusterInfo(configMap.data ?? {}, join);
        } catch (error) {
          // A wrong signature or CA stays wrong: waiting cannot help, and may hide an attack.
          const message = (error as Error).message;
          if (/does not match|not the pinned/.test(message)) throw new PermanentError(message);
          throw error;
        }
        // Now that the CA is pinned, the same read must succeed over a verified connection.
        await kubeGet({ server: join.server, ca: discovered.caCertPem }, path);
        return discovered;
      },
      { timeoutMs, intervalMs: 100 },
    );
  } catch (error) {
    throw new Error(`joining ${join.server}: ${(error as Error).message}`, { cause: error });
  }
}

/**
 * A kubeconfig file of a node: the cluster by its server and CA file, and one user whose fields
 * (a token, or certificate and key files) are given.
 */
export function nodeKubeconfig(
  server: string,
  caFile: string,
  userName: string,
  user: Record<string, string>,
): string {
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: vind',
    '  cluster:',
    `    certificate-authority: ${caFile}`,
    `    server: ${server}`,
    'users:',
    `- name: ${userName}`,
    '  user:',
    ...Object.entries(user).map(([field, value]) => `    ${field}: ${value}`),
    'contexts:',
    '- name: vind',
    '  context:',
    '    cluster: vind',
    `    user: ${userName}`,
    'current-context: vind',
    '',
  ].join('\n');
}

/** The kubeconfig the kubelet uses for TLS bootstrap. */
export function bootstrapKubeconfig(server: string, caFile: string, token: string): string {
  return nodeKubeconfig(server, caFile, 'kubelet-bootstrap', { token });
}
