// Kubelet serving certificates: every kubelet asks, through the CSR API, for a certificate of its
// HTTPS port signed by the cluster CA (`serverTLSBootstrap`). Kubernetes approves no such request by
// itself, since only the cluster knows which names a node may claim; this controller, in the control
// plane's agent, approves a request only when it comes from the node it names, for that node's own
// name and addresses, for serving only. The controller manager then signs it. With such certificates
// the API server and metrics-server verify every kubelet they talk to.

import { type KubeNode, type KubeTarget, kubeRequest, watchCollection } from '../shared/kubernetes.js';
import { log } from './log.js';
import { reconciler } from './reconciler.js';
import { parseCertificateRequest, type RequestedIdentity } from './x509.js';

export const KUBELET_SERVING_SIGNER = 'kubernetes.io/kubelet-serving';
const NODE_USER_PREFIX = 'system:node:';
const NODES_GROUP = 'system:nodes';
/** What a serving certificate may be used for; `server auth` is required. */
const SERVING_USAGES = new Set(['digital signature', 'key encipherment', 'server auth']);
/** Node address types a serving certificate may name. */
const ADDRESS_TYPES = new Set(['InternalIP', 'ExternalIP']);
const NAME_TYPES = new Set(['Hostname', 'InternalDNS', 'ExternalDNS']);

export interface CertificateSigningRequest {
  metadata: { name: string; resourceVersion?: string };
  spec: {
    request: string;
    signerName: string;
    username?: string;
    uid?: string;
    groups?: string[];
    extra?: Record<string, string[]>;
    usages?: string[];
    expirationSeconds?: number;
  };
  status?: { conditions?: { type: string; status?: string }[]; certificate?: string };
}

export type Review =
  | { verdict: 'approve'; node: string }
  | { verdict: 'deny'; reason: string }
  /** Not decidable yet (the node has not registered or reported its addresses): looked at again later. */
  | { verdict: 'wait'; reason: string };

/** The request's PEM text: the API carries it base64-encoded. */
export function requestPem(csr: CertificateSigningRequest): string {
  return Buffer.from(csr.spec.request, 'base64').toString('utf8');
}

export function isPending(csr: CertificateSigningRequest): boolean {
  return !csr.status?.conditions?.some((c) => ['Approved', 'Denied', 'Failed'].includes(c.type));
}

/** The decision for one kubelet serving request, from who sent it, what it asks, and the node's status. */
export function reviewServingRequest(
  csr: CertificateSigningRequest,
  requested: RequestedIdentity | undefined,
  nodes: ReadonlyMap<string, KubeNode>,
): Review {
  const { username = '', groups = [], usages = [] } = csr.spec;
  if (!username.startsWith(NODE_USER_PREFIX) || !groups.includes(NODES_GROUP)) {
    return { verdict: 'deny', reason: `sent by ${username || 'nobody'}, not by a node` };
  }
  const nodeName = username.slice(NODE_USER_PREFIX.length);
  if (!requested)
    return { verdict: 'deny', reason: 'the request is not a valid PKCS#10 certificate request' };
  if (requested.commonNames.length !== 1 || requested.commonNames[0] !== username) {
    return { verdict: 'deny', reason: `the subject is not ${username}` };
  }
  if (requested.organizations.length !== 1 || requested.organizations[0] !== NODES_GROUP) {
    return { verdict: 'deny', reason: `the subject's organization is not ${NODES_GROUP}` };
  }
  const unusual = usages.filter((u) => !SERVING_USAGES.has(u));
  if (unusual.length > 0 || !usages.includes('server auth')) {
    return { verdict: 'deny', reason: `usages ${usages.join(', ')} are not those of a serving certificate` };
  }
  if (requested.otherNames.length > 0) {
    return { verdict: 'deny', reason: `names ${requested.otherNames.join(', ')} are not a node's` };
  }
  if (requested.dnsNames.length + requested.ips.length === 0) {
    return { verdict: 'deny', reason: 'the request names no DNS name or address' };
  }
  const node = nodes.get(nodeName);
  if (!node) return { verdict: 'wait', reason: `node ${nodeName} has not registered yet` };
  const addresses = node.status?.addresses ?? [];
  const ownNames = new Set([
    nodeName,
    ...addresses.filter((a) => NAME_TYPES.has(a.type)).map((a) => a.address),
  ]);
  const ownIps = new Set(addresses.filter((a) => ADDRESS_TYPES.has(a.type)).map((a) => a.address));
  const foreignNames = requested.dnsNames.filter((n) => !ownNames.has(n));
  if (foreignNames.length > 0) {
    return { verdict: 'deny', reason: `${foreignNames.join(', ')} is not a name of node ${nodeName}` };
  }
  const foreignIps = requested.ips.filter((ip) => !ownIps.has(ip));
  if (foreignIps.length > 0) {
    // A node that has just registered may not have reported its addresses yet.
    if (ownIps.size === 0) return { verdict: 'wait', reason: `node ${nodeName} has reported no address yet` };
    return { verdict: 'deny', reason: `${foreignIps.join(', ')} is not an address of node ${nodeName}` };
  }
  return { verdict: 'approve', node: nodeName };
}

export const CSR_PATH = '/apis/certificates.k8s.io/v1/certificatesigningrequests';

/**
 * Adds an Approved or Denied condition to a request; the request as it is now, or undefined when it
 * changed meanwhile (decided elsewhere, or a newer version is in the watch already) or is gone.
 */
export async function decide(
  target: KubeTarget,
  csr: CertificateSigningRequest,
  type: 'Approved' | 'Denied',
  reason: string,
  message: string,
): Promise<CertificateSigningRequest | undefined> {
  const body = {
    ...csr,
    status: {
      ...csr.status,
      conditions: [
        ...(csr.status?.conditions ?? []),
        {
          type,
          status: 'True',
          reason,
          message,
          lastUpdateTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
        },
      ],
    },
  };
  const response = await kubeRequest<CertificateSigningRequest>(
    target,
    'PUT',
    `${CSR_PATH}/${csr.metadata.name}/approval`,
    body,
  );
  if (response.status === 409 || response.status === 404) return undefined;
  if (response.status < 200 || response.status > 299) {
    throw new Error(`${type.toLowerCase()} ${csr.metadata.name}: ${response.status}`);
  }
  return response.body;
}

/** Approves kubelet serving requests that pass `reviewServingRequest`, denies the others, until `signal`. */
export function approveKubeletServingCertificates(target: KubeTarget, signal: AbortSignal): void {
  let requests: CertificateSigningRequest[] = [];
  let nodes = new Map<string, KubeNode>();
  const waiting = new Map<string, string>();
  const pass = async () => {
    for (const csr of requests) {
      if (csr.spec.signerName !== KUBELET_SERVING_SIGNER || !isPending(csr)) continue;
      const review = reviewServingRequest(csr, await parseCertificateRequest(requestPem(csr)), nodes);
      if (review.verdict === 'wait') {
        if (waiting.get(csr.metadata.name) !== review.reason)
          log(`serving certificate ${csr.metadata.name}: ${review.reason}`);
        waiting.set(csr.metadata.name, review.reason);
        continue;
      }
      waiting.delete(csr.metadata.name);
      if (review.verdict === 'approve') {
        await decide(
          target,
          csr,
          'Approved',
          'VindKubeletServingApproved',
          `the serving certificate of node ${review.node}, for its own names`,
        );
        log(`approved the serving certificate of node ${review.node} (${csr.metadata.name})`);
      } else {
        await decide(target, csr, 'Denied', 'VindKubeletServingDenied', review.reason);
        log(`denied ${csr.metadata.name}: ${review.reason}`);
      }
    }
  };
  const kick = reconciler(pass, { logPrefix: 'serving certificates', retryMs: 1000, signal });
  const onError = (what: string) => (error: Error) =>
    log(`serving certificates: watching ${what}: ${error.message.split('\n')[0]}`);
  watchCollection<CertificateSigningRequest>(
    target,
    CSR_PATH,
    (items) => {
      requests = items;
      kick();
    },
    onError('certificate signing requests'),
    signal,
  );
  watchCollection<KubeNode>(
    target,
    '/api/v1/nodes',
    (items) => {
      nodes = new Map(items.map((n) => [n.metadata.name, n]));
      kick();
    },
    onError('nodes'),
    signal,
  );
}
