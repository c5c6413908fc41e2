// The kubelet's TLS bootstrap, done by the node agent before the kubelet starts. It sends the request
// the kubelet would send (signer kubernetes.io/kube-apiserver-client-kubelet, CN system:node:<node>,
// O system:nodes) with the bootstrap token; the controller manager approves and signs it as it would
// the kubelet's own. The kubelet then starts with its credentials and keeps rotating them itself.
// Done by the kubelet, the bootstrap ran as anonymous until the certificate came (its informers
// failed and backed off), and it dropped every connection a second later to switch to the new
// certificate, which delayed the first pods on a new node by up to two seconds.

import { createHash } from 'node:crypto';
import { mkdir, rm, symlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { type KubeTarget, kubeRequest } from '../shared/kubernetes.js';
import { PermanentError, poll } from '../shared/poll.js';
import { nodeKubeconfig } from './join.js';
import { log } from './log.js';
import { type CertificateSigningRequest, CSR_PATH } from './kubelet-serving.js';
import { createCertificateRequest, generateKeyPem } from './x509.js';

export const KUBELET_CLIENT_SIGNER = 'kubernetes.io/kube-apiserver-client-kubelet';

/** The CertificateSigningRequest object for a kubelet client certificate. Pure. */
export function kubeletClientRequest(requestPem: string): CertificateSigningRequest {
  // Named by the request's digest, as the kubelet names its own: a retried POST finds its first one.
  const digest = createHash('sha256').update(requestPem).digest('base64url').slice(0, 32);
  return {
    metadata: { name: `node-csr-${digest}` },
    spec: {
      request: Buffer.from(requestPem).toString('base64'),
      signerName: KUBELET_CLIENT_SIGNER,
      // What the kubelet asks for with an ECDSA key, and what the controller manager auto-approves.
      usages: ['digital signature', 'client auth'],
    },
  };
}

/** The signed certificate's PEM once there is one; throws for good when the request was refused. Pure. */
export function issuedCertificate(csr: CertificateSigningRequest): string | undefined {
  const refused = csr.status?.conditions?.find((c) => c.type === 'Denied' || c.type === 'Failed');
  if (refused) {
    throw new PermanentError(
      `the kubelet client certificate request ${csr.metadata.name} was ${refused.type.toLowerCase()}`,
    );
  }
  return csr.status?.certificate ? Buffer.from(csr.status.certificate, 'base64').toString('utf8') : undefined;
}

/** The kubelet's kubeconfig as the kubelet writes it after bootstrap: cert and key in one rotating file. */
export function kubeletKubeconfig(server: string, caFile: string, pairFile: string): string {
  return nodeKubeconfig(server, caFile, 'kubelet', {
    'client-certificate': pairFile,
    'client-key': pairFile,
  });
}

/** A key and the request for it, made while the worker still waits for the cluster. */
export interface KubeletClientKey {
  keyPem: string;
  csr: CertificateSigningRequest;
}

export async function kubeletClientKey(nodeName: string): Promise<KubeletClientKey> {
  const keyPem = await generateKeyPem();
  const requestPem = await createCertificateRequest(keyPem, `system:node:${nodeName}`, ['system:nodes']);
  return { keyPem, csr: kubeletClientRequest(requestPem) };
}

export interface KubeletClientBootstrap {
  server: string;
  caPem: string;
  token: string;
  key: KubeletClientKey;
  /**
   * The kubelet's `kubelet-client-current.pem`: a link to a dated file holding certificate and key,
   * the layout of the kubelet's own certificate store, so that its rotation takes over.
   */
  pairFile: string;
  timeoutMs: number;
  signal?: AbortSignal;
}

/** Asks for, waits for and stores the kubelet's client certificate. */
export async function bootstrapKubeletClient(options: KubeletClientBootstrap): Promise<void> {
  const target: KubeTarget = { server: options.server, ca: options.caPem, token: options.token };
  const { keyPem, csr } = options.key;
  const path = `${CSR_PATH}/${csr.metadata.name}`;
  // The control plane's agent signs within a few tens of milliseconds: looked at often, for a short while.
  const waits = { timeoutMs: options.timeoutMs, intervalMs: 50, signal: options.signal };

  // Until the API server serves and the join objects exist, the token is unknown or not yet allowed.
  await poll(
    'the API server to take the kubelet client certificate request',
    async () => {
      const answer = await kubeRequest(target, 'POST', CSR_PATH, csr);
      if (answer.status === 201 || answer.status === 409) return true;
      throw new Error(`POST ${CSR_PATH}: HTTP ${answer.status}`);
    },
    waits,
  );
  log(`asked for the kubelet client certificate (${csr.metadata.name})`);
  const certPem = await poll(
    'the kubelet client certificate to be signed',
    async () => {
      const answer = await kubeRequest<CertificateSigningRequest>(target, 'GET', path);
      if (answer.status !== 200) throw new Error(`GET ${path}: HTTP ${answer.status}`);
      return issuedCertificate(answer.body);
    },
    waits,
  );

  const stamp = new Date().toISOString().slice(0, 19).replace(/[T:]/g, '-');
  const dated = join(dirname(options.pairFile), `kubelet-client-${stamp}.pem`);
  await mkdir(dirname(options.pairFile), { recursive: true, mode: 0o700 });
  await writeFile(dated, `${certPem.trimEnd()}\n${keyPem}`, { mode: 0o600 });
  await rm(options.pairFile, { force: true });
  await symlink(basename(dated), options.pairFile);
}
