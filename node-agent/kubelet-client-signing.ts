// Kubelet client certificates, approved and signed in the control plane's agent the moment a node
// asks. The controller manager does the same by the same rules, but only once its controllers have
// started and their caches synced: half a second to a second after the API server serves, the whole
// time a new worker waited before its kubelet could start. The rules are upstream's:
// - the request is exactly a kubelet client request (subject CN system:node:<name>, O system:nodes,
//   no other names, usages client auth and digital signature, with or without key encipherment);
// - a SubjectAccessReview allows its sender `create` on certificatesigningrequests/selfnodeclient
//   (a node renewing its own) or /nodeclient (a bootstrap token);
// - the certificate is the controller manager's: the request's key and subject, its usages, valid
//   from five minutes ago for a year (or the request's shorter expirationSeconds, ten minutes at
//   least), never past the CA.
// Whichever of the two comes first wins; the other finds the request approved, or signed, and skips it.

import { type KubeTarget, kubeRequest, watchCollection } from '../shared/kubernetes.js';
import { KUBELET_CLIENT_SIGNER } from './kubelet-client.js';
import {
  type CertificateSigningRequest,
  CSR_PATH,
  decide,
  isPending,
  requestPem,
} from './kubelet-serving.js';
import { log } from './log.js';
import { reconciler } from './reconciler.js';
import {
  type CaMaterial,
  issueForRequest,
  type KeyUsageName,
  parseCertificateRequest,
  type RequestedIdentity,
} from './x509.js';

const NODE_PREFIX = 'system:node:';
const MINUTE_MS = 60_000;
/** The controller manager's --cluster-signing-duration, left at its default. */
const SIGNING_DURATION_MS = 365 * 24 * 60 * MINUTE_MS;
const BACKDATE_MS = 5 * MINUTE_MS;
const SHORT_MS = 8 * 60 * MINUTE_MS;
const MIN_DURATION_MS = 10 * MINUTE_MS;

/** The usages a kubelet client request may ask for: exactly one of these sets. */
const CLIENT_USAGE_SETS = [
  ['client auth', 'digital signature', 'key encipherment'],
  ['client auth', 'digital signature'],
];

/**
 * The subresource a SubjectAccessReview must allow for the request to be approved, or undefined when
 * it is not a kubelet client request this signer takes. Pure.
 */
export function kubeletClientPermission(
  csr: CertificateSigningRequest,
  requested: RequestedIdentity | undefined,
): 'selfnodeclient' | 'nodeclient' | undefined {
  if (csr.spec.signerName !== KUBELET_CLIENT_SIGNER || !requested) return undefined;
  const [commonName] = requested.commonNames;
  if (requested.commonNames.length !== 1 || !commonName?.startsWith(NODE_PREFIX)) return undefined;
  if (requested.organizations.length !== 1 || requested.organizations[0] !== 'system:nodes') return undefined;
  if (requested.dnsNames.length + requested.ips.length + requested.otherNames.length > 0) return undefined;
  const usages = [...new Set(csr.spec.usages ?? [])].sort();
  if (!CLIENT_USAGE_SETS.some((set) => set.join() === usages.join())) return undefined;
  return csr.spec.username === commonName ? 'selfnodeclient' : 'nodeclient';
}

/** When the certificate for a request signed at `now` is valid, as the controller manager decides. Pure. */
export function clientCertificateTimes(
  now: number,
  expirationSeconds: number | undefined,
  caNotAfter: Date,
): { notBefore: Date; notAfter: Date } {
  let ttl = SIGNING_DURATION_MS;
  if (expirationSeconds !== undefined) {
    ttl = Math.min(SIGNING_DURATION_MS, Math.max(MIN_DURATION_MS, expirationSeconds * 1000));
  }
  // Whole seconds: certificate times carry no fractions.
  const second = Math.floor(now / 1000) * 1000;
  const notAfter = second + (ttl < SHORT_MS ? ttl : ttl - BACKDATE_MS);
  return {
    notBefore: new Date(second - BACKDATE_MS),
    notAfter: new Date(Math.min(notAfter, caNotAfter.getTime())),
  };
}

function isApproved(csr: CertificateSigningRequest): boolean {
  const conditions = csr.status?.conditions ?? [];
  return (
    conditions.some((c) => c.type === 'Approved') &&
    !conditions.some((c) => c.type === 'Denied' || c.type === 'Failed')
  );
}

/** Whether the request's sender may create the given CSR subresource: the controller manager's check. */
async function senderMay(
  target: KubeTarget,
  csr: CertificateSigningRequest,
  subresource: string,
): Promise<boolean> {
  const review = {
    apiVersion: 'authorization.k8s.io/v1',
    kind: 'SubjectAccessReview',
    spec: {
      user: csr.spec.username,
      uid: csr.spec.uid,
      groups: csr.spec.groups,
      extra: csr.spec.extra,
      resourceAttributes: {
        group: 'certificates.k8s.io',
        resource: 'certificatesigningrequests',
        verb: 'create',
        subresource,
      },
    },
  };
  const answer = await kubeRequest<{ status?: { allowed?: boolean } }>(
    target,
    'POST',
    '/apis/authorization.k8s.io/v1/subjectaccessreviews',
    review,
  );
  if (answer.status !== 201)
    throw new Error(`SubjectAccessReview for ${csr.metadata.name}: ${answer.status}`);
  return answer.body.status?.allowed === true;
}

async function sign(target: KubeTarget, ca: CaMaterial, csr: CertificateSigningRequest): Promise<void> {
  const usages = csr.spec.usages ?? [];
  const certificate = await issueForRequest(ca, requestPem(csr), {
    ...clientCertificateTimes(Date.now(), csr.spec.expirationSeconds, new Date(ca.cert.validTo)),
    usage: 'client',
    keyUsages: usages.filter((u): u is KeyUsageName => u === 'digital signature' || u === 'key encipherment'),
  });
  const body = {
    ...csr,
    status: { ...csr.status, certificate: Buffer.from(certificate).toString('base64') },
  };
  const answer = await kubeRequest(target, 'PUT', `${CSR_PATH}/${csr.metadata.name}/status`, body);
  // 409: signed meanwhile by the controller manager, or changed; the watch brings the new version.
  if (answer.status === 409 || answer.status === 404) return;
  if (answer.status !== 200) throw new Error(`signing ${csr.metadata.name}: ${answer.status}`);
  log(
    `signed the kubelet client certificate ${csr.metadata.name}, asked by ${csr.spec.username ?? 'nobody'}`,
  );
}

/** Approves and signs kubelet client requests as the controller manager would, until `signal`. */
export function signKubeletClientCertificates(target: KubeTarget, ca: CaMaterial, signal: AbortSignal): void {
  let requests: CertificateSigningRequest[] = [];
  const pass = async () => {
    for (const listed of requests) {
      if (listed.spec.signerName !== KUBELET_CLIENT_SIGNER || listed.status?.certificate) continue;
      // Checked whoever approved it: nothing is signed that is not exactly a kubelet client request.
      const permission = kubeletClientPermission(listed, await parseCertificateRequest(requestPem(listed)));
      if (!permission) continue;
      let csr: CertificateSigningRequest | undefined = listed;
      if (isPending(csr)) {
        if (!(await senderMay(target, csr, permission))) continue;
        csr = await decide(
          target,
          csr,
          'Approved',
          'AutoApproved',
          permission === 'selfnodeclient'
            ? 'Auto approving self kubelet client certificate after SubjectAccessReview.'
            : 'Auto approving kubelet client certificate after SubjectAccessReview.',
        );
        if (!csr) continue;
      }
      if (isApproved(csr)) await sign(target, ca, csr);
    }
  };
  const kick = reconciler(pass, { logPrefix: 'kubelet client certificates', retryMs: 1000, signal });
  watchCollection<CertificateSigningRequest>(
    target,
    CSR_PATH,
    (items) => {
      requests = items;
      kick();
    },
    (error) => log(`kubelet client certificates: watching requests: ${error.message.split('\n')[0]}`),
    signal,
  );
}
