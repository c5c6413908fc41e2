// The one module that talks to the Kubernetes API, used by the CLI (readiness waits) and by the
// node-agent (joining, routes). It is built on node:https rather than undici because it also runs
// inside the node image, on Debian's Node.js 18, which current undici releases do not support.

import { request } from 'node:https';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';

export interface KubeTarget {
  /** https://host:port */
  server: string;
  ca?: string | Buffer;
  cert?: string | Buffer;
  key?: string | Buffer;
  token?: string;
  /** Only for the first, unauthenticated look at cluster-info, whose CA is then pinned by hash. */
  insecureSkipVerify?: boolean;
}

export class KubeError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

export interface KubeResponse<T> {
  status: number;
  body: T;
}

export async function kubeRequest<T = unknown>(
  target: KubeTarget,
  method: string,
  path: string,
  body?: unknown,
  timeoutMs = 10_000,
): Promise<KubeResponse<T>> {
  const url = new URL(path, target.server);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method,
        ca: target.ca,
        cert: target.cert,
        key: target.key,
        rejectUnauthorized: !target.insecureSkipVerify,
        headers: {
          Accept: 'application/json',
          ...(payload ? { 'Content-Type': 'application/json', 'Content-Length': payload.length } : {}),
          ...(target.token ? { Authorization: `Bearer ${target.token}` } : {}),
        },
        timeout: timeoutMs,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            // plain-text answers (/readyz, /healthz) stay text
          }
          resolve({ status: res.statusCode ?? 0, body: parsed as T });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () =>
      req.destroy(new KubeError(`${method} ${url.pathname}: no answer in ${timeoutMs}ms`)),
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** GET that throws on anything but 2xx. */
export async function kubeGet<T>(target: KubeTarget, path: string, timeoutMs?: number): Promise<T> {
  const response = await kubeRequest<T>(target, 'GET', path, undefined, timeoutMs);
  if (response.status < 200 || response.status > 299) {
    const message = (response.body as { message?: string } | undefined)?.message ?? String(response.body);
    throw new KubeError(`GET ${path}: ${response.status} ${message}`, response.status);
  }
  return response.body;
}

interface KubeconfigDocument {
  clusters?: { name: string; cluster: Record<string, string> }[];
  users?: { name: string; user: Record<string, string> }[];
  contexts?: { name: string; context: { cluster: string; user: string } }[];
  'current-context'?: string;
}

function dataOrFile(entry: Record<string, string>, field: string): Buffer | undefined {
  if (entry[`${field}-data`]) return Buffer.from(entry[`${field}-data`]!, 'base64');
  if (entry[field]) return readFileSync(entry[field]!);
  return undefined;
}

/** The target of a kubeconfig's current context (inline data or file references). */
export function targetFromKubeconfig(text: string): KubeTarget {
  const doc = parse(text) as KubeconfigDocument;
  const contextName = doc['current-context'] ?? doc.contexts?.[0]?.name;
  const context = doc.contexts?.find((c) => c.name === contextName)?.context;
  const cluster =
    doc.clusters?.find((c) => c.name === context?.cluster)?.cluster ?? doc.clusters?.[0]?.cluster;
  const user = doc.users?.find((u) => u.name === context?.user)?.user ?? doc.users?.[0]?.user ?? {};
  if (!cluster?.server) throw new Error('kubeconfig has no cluster server');
  return {
    server: cluster.server,
    ca: dataOrFile(cluster, 'certificate-authority'),
    cert: dataOrFile(user, 'client-certificate'),
    key: dataOrFile(user, 'client-key'),
    token: user.token,
  };
}

export interface NodeCondition {
  type: string;
  status: string;
}

export interface KubeNode {
  metadata: { name: string; labels?: Record<string, string> };
  spec: { podCIDR?: string; podCIDRs?: string[] };
  status?: { conditions?: NodeCondition[]; addresses?: { type: string; address: string }[] };
}

export function isNodeReady(node: KubeNode): boolean {
  return node.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
}

export function internalIp(node: KubeNode): string | undefined {
  return node.status?.addresses?.find((a) => a.type === 'InternalIP')?.address;
}

export async function listNodes(target: KubeTarget): Promise<KubeNode[]> {
  return (await kubeGet<{ items: KubeNode[] }>(target, '/api/v1/nodes')).items;
}

export async function deploymentAvailable(
  target: KubeTarget,
  namespace: string,
  name: string,
): Promise<boolean> {
  const deployment = await kubeGet<{ status?: { availableReplicas?: number } }>(
    target,
    `/apis/apps/v1/namespaces/${namespace}/deployments/${name}`,
  );
  return (deployment.status?.availableReplicas ?? 0) > 0;
}

/** Whether the API server answers /readyz with "ok". */
export async function apiReady(target: KubeTarget): Promise<boolean> {
  try {
    const response = await kubeRequest<string>(target, 'GET', '/readyz', undefined, 3000);
    return response.status === 200;
  } catch {
    return false;
  }
}
