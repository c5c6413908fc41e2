// The one module that talks to the Kubernetes API, used by the CLI (readiness waits) and by the
// node-agent (joining, routes). It is built on node:https rather than undici because it also runs
// inside the node image, on Debian's Node.js 18, which current undici releases do not support.

import { Agent, request } from 'node:https';
import { createSecureContext } from 'node:tls';
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

/** Agents by target: one TLS setup per API server and identity, and its connections kept open. */
const agents = new Map<string, Agent>();
const MAX_AGENTS = 32;

/**
 * The keep-alive agent of a target, with its TLS context made once. A fresh context per request parsed
 * the CA and key again every time: polling an API server that was starting cost the control plane's
 * agent over a second of CPU that the API server itself needed. Idle kept sockets do not hold the
 * process open.
 */
function agentFor(target: KubeTarget): Agent {
  const text = (value: string | Buffer | undefined) => (value === undefined ? '' : value.toString());
  const key = [
    target.server,
    target.insecureSkipVerify ? 'insecure' : '',
    text(target.ca),
    text(target.cert),
  ].join('|');
  let agent = agents.get(key);
  if (agent) {
    // Most recently used last, so that the first entry is the one to let go.
    agents.delete(key);
  } else {
    agent = new Agent({
      keepAlive: true,
      // Made once: without it every new connection parses the CA and key again.
      secureContext: createSecureContext({ ca: target.ca, cert: target.cert, key: target.key }),
      rejectUnauthorized: !target.insecureSkipVerify,
    });
    if (agents.size >= MAX_AGENTS) {
      const [oldest] = agents.keys();
      agents.get(oldest!)?.destroy();
      agents.delete(oldest!);
    }
  }
  agents.set(key, agent);
  return agent;
}

export async function kubeRequest<T = unknown>(
  target: KubeTarget,
  method: string,
  path: string,
  body?: unknown,
  timeoutMs = 10_000,
  contentType = 'application/json',
): Promise<KubeResponse<T>> {
  const url = new URL(path, target.server);
  const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method,
        agent: agentFor(target),
        headers: {
          Accept: 'application/json',
          ...(payload ? { 'Content-Type': contentType, 'Content-Length': payload.length } : {}),
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
  return okOrThrow(await kubeRequest<T>(target, 'GET', path, undefined, timeoutMs), 'GET', path);
}

const PATCH_TYPES = {
  merge: 'application/merge-patch+json',
  strategic: 'application/strategic-merge-patch+json',
  apply: 'application/apply-patch+yaml',
} as const;

/**
 * PATCH that throws on anything but 2xx. `apply` is server-side apply (JSON is YAML) as
 * `fieldManager`, taking over fields other managers set.
 */
export async function kubePatch<T = unknown>(
  target: KubeTarget,
  path: string,
  patch: unknown,
  type: keyof typeof PATCH_TYPES,
  fieldManager?: string,
): Promise<T> {
  const query =
    type === 'apply' ? `${path.includes('?') ? '&' : '?'}fieldManager=${fieldManager}&force=true` : '';
  const response = await kubeRequest<T>(target, 'PATCH', `${path}${query}`, patch, 10_000, PATCH_TYPES[type]);
  return okOrThrow(response, 'PATCH', path);
}

/** The kinds vind applies itself: their plural and whether they live in a namespace. */
const RESOURCES: Record<string, { plural: string; namespaced: boolean }> = {
  Namespace: { plural: 'namespaces', namespaced: false },
  ConfigMap: { plural: 'configmaps', namespaced: true },
  Secret: { plural: 'secrets', namespaced: true },
  ServiceAccount: { plural: 'serviceaccounts', namespaced: true },
  Service: { plural: 'services', namespaced: true },
  Deployment: { plural: 'deployments', namespaced: true },
  DaemonSet: { plural: 'daemonsets', namespaced: true },
  ClusterRole: { plural: 'clusterroles', namespaced: false },
  ClusterRoleBinding: { plural: 'clusterrolebindings', namespaced: false },
  Role: { plural: 'roles', namespaced: true },
  RoleBinding: { plural: 'rolebindings', namespaced: true },
  StorageClass: { plural: 'storageclasses', namespaced: false },
  APIService: { plural: 'apiservices', namespaced: false },
};

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
}

/** An object's own URL path, from its apiVersion, kind, namespace and name. */
export function objectPath(object: KubeObject): string {
  const resource = RESOURCES[object.kind];
  if (!resource) throw new Error(`no API path known for kind ${object.kind}`);
  const base = object.apiVersion.includes('/') ? `/apis/${object.apiVersion}` : `/api/${object.apiVersion}`;
  const namespace = object.metadata.namespace ?? 'default';
  const scope = resource.namespaced ? `/namespaces/${namespace}` : '';
  return `${base}${scope}/${resource.plural}/${object.metadata.name}`;
}

/** Server-side apply of one object, as `fieldManager`, taking over fields other managers set. */
export async function applyObject(
  target: KubeTarget,
  object: KubeObject,
  fieldManager: string,
): Promise<void> {
  await kubePatch(target, objectPath(object), object, 'apply', fieldManager);
}

/** POST that throws on anything but 2xx. */
export async function kubePost<T = unknown>(target: KubeTarget, path: string, body: unknown): Promise<T> {
  return okOrThrow(await kubeRequest<T>(target, 'POST', path, body), 'POST', path);
}

function okOrThrow<T>(response: KubeResponse<T>, method: string, path: string): T {
  if (response.status < 200 || response.status > 299) {
    const message = (response.body as { message?: string } | undefined)?.message ?? String(response.body);
    throw new KubeError(`${method} ${path}: ${response.status} ${message}`, response.status);
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
  /** When the kubelet last posted this condition (RFC 3339). */
  lastHeartbeatTime?: string;
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

export interface ObjectMeta {
  metadata: { name: string; namespace?: string; resourceVersion?: string };
}

interface WatchEvent<T> {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: T & { code?: number };
}

/** Streams one watch request, calling `onEvent` per event line; resolves when the server ends it. */
function streamWatch<T>(
  target: KubeTarget,
  path: string,
  onEvent: (event: WatchEvent<T>) => void,
  signal: AbortSignal,
): Promise<void> {
  const url = new URL(path, target.server);
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'GET',
        agent: agentFor(target),
        signal,
        headers: {
          Accept: 'application/json',
          ...(target.token ? { Authorization: `Bearer ${target.token}` } : {}),
        },
      },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          reject(new KubeError(`watch ${url.pathname}: ${res.statusCode}`, res.statusCode));
          return;
        }
        let pending = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          pending += chunk;
          let newline: number;
          while ((newline = pending.indexOf('\n')) >= 0) {
            const line = pending.slice(0, newline).trim();
            pending = pending.slice(newline + 1);
            if (line) onEvent(JSON.parse(line) as WatchEvent<T>);
          }
        });
        res.on('end', resolve);
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/**
 * Keeps a collection in view: list, then watch from the list's resourceVersion, calling `onChange`
 * with every current item after each change. A watch the server ends is resumed; an expired one
 * (410) or a broken connection lists again after a second. Stops when `signal` aborts.
 */
export function watchCollection<T extends ObjectMeta>(
  target: KubeTarget,
  path: string,
  onChange: (items: T[]) => void,
  onError: (error: Error) => void,
  signal: AbortSignal,
): void {
  const key = (o: T) => `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
  const run = async () => {
    while (!signal.aborted) {
      try {
        const list = await kubeGet<{ items: T[]; metadata: { resourceVersion: string } }>(target, path);
        const items = new Map(list.items.map((o) => [key(o), o]));
        onChange([...items.values()]);
        let version = list.metadata.resourceVersion;
        for (;;) {
          let expired = false;
          const separator = path.includes('?') ? '&' : '?';
          await streamWatch<T>(
            target,
            `${path}${separator}watch=1&allowWatchBookmarks=true&timeoutSeconds=600&resourceVersion=${version}`,
            (event) => {
              if (event.type === 'ERROR') {
                // 410: the version is too old to resume from; anything else: start over as well.
                expired = true;
                if (event.object.code !== 410)
                  onError(new Error(`watch ${path}: ${JSON.stringify(event.object)}`));
                return;
              }
              version = event.object.metadata.resourceVersion ?? version;
              if (event.type === 'BOOKMARK') return;
              if (event.type === 'DELETED') items.delete(key(event.object));
              else items.set(key(event.object), event.object);
              onChange([...items.values()]);
            },
            signal,
          );
          if (expired || signal.aborted) break;
        }
      } catch (error) {
        if (signal.aborted) return;
        onError(error as Error);
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  };
  void run();
}
