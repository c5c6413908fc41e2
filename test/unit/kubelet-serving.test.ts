import { webcrypto } from 'node:crypto';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  type CertificateSigningRequest,
  isPending,
  KUBELET_SERVING_SIGNER,
  requestPem,
  reviewServingRequest,
} from '../../node-agent/kubelet-serving.js';
import { parseCertificateRequest } from '../../node-agent/x509.js';
import type { KubeNode } from '../../shared/kubernetes.js';

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/** A real PKCS#10 request, as a kubelet makes it (subject, SANs), signed by a new P-256 key. */
async function csrPem(subject: string, names: x509.JsonGeneralName[]): Promise<string> {
  x509.cryptoProvider.set(webcrypto);
  const keys = await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify']);
  const request = await x509.Pkcs10CertificateRequestGenerator.create({
    name: subject,
    keys,
    signingAlgorithm: ALG,
    extensions: names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names)] : [],
  });
  return request.toString('pem');
}

const node = (name: string, ip?: string): KubeNode => ({
  metadata: { name },
  spec: {},
  status: {
    addresses: [...(ip ? [{ type: 'InternalIP', address: ip }] : []), { type: 'Hostname', address: name }],
  },
});
const nodes = new Map([
  ['dev-worker', node('dev-worker', '172.30.0.3')],
  ['dev-worker2', node('dev-worker2', '172.30.0.4')],
]);

function csr(
  request: string,
  spec: Partial<CertificateSigningRequest['spec']> = {},
): CertificateSigningRequest {
  return {
    metadata: { name: 'csr-1' },
    spec: {
      request: Buffer.from(request).toString('base64'),
      signerName: KUBELET_SERVING_SIGNER,
      username: 'system:node:dev-worker',
      groups: ['system:nodes', 'system:authenticated'],
      usages: ['digital signature', 'server auth'],
      ...spec,
    },
  };
}

async function review(request: string, spec: Partial<CertificateSigningRequest['spec']> = {}, known = nodes) {
  const sent = csr(request, spec);
  return reviewServingRequest(sent, await parseCertificateRequest(requestPem(sent)), known);
}

describe('kubelet serving certificate review', () => {
  let own: string;
  beforeAll(async () => {
    own = await csrPem('O=system:nodes, CN=system:node:dev-worker', [
      { type: 'dns', value: 'dev-worker' },
      { type: 'ip', value: '172.30.0.3' },
    ]);
  });

  it("reads a request's subject and names, and refuses what is not a request", async () => {
    expect(await parseCertificateRequest(own)).toEqual({
      commonNames: ['system:node:dev-worker'],
      organizations: ['system:nodes'],
      dnsNames: ['dev-worker'],
      ips: ['172.30.0.3'],
      otherNames: [],
    });
    expect(
      await parseCertificateRequest(
        '-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----',
      ),
    ).toBeUndefined();
  });

  it("approves a node's request for its own name and address, for serving", async () => {
    expect(await review(own)).toEqual({ verdict: 'approve', node: 'dev-worker' });
    expect(await review(own, { usages: ['digital signature', 'key encipherment', 'server auth'] })).toEqual({
      verdict: 'approve',
      node: 'dev-worker',
    });
  });

  it("denies another node's name or address, and a request from anyone but the node it names", async () => {
    const foreignName = await csrPem('O=system:nodes, CN=system:node:dev-worker', [
      { type: 'dns', value: 'dev-worker2' },
    ]);
    expect(await review(foreignName)).toEqual({
      verdict: 'deny',
      reason: 'dev-worker2 is not a name of node dev-worker',
    });
    const foreignIp = await csrPem('O=system:nodes, CN=system:node:dev-worker', [
      { type: 'ip', value: '172.30.0.4' },
    ]);
    expect(await review(foreignIp)).toEqual({
      verdict: 'deny',
      reason: '172.30.0.4 is not an address of node dev-worker',
    });
    expect(await review(own, { username: 'system:node:dev-worker2' })).toEqual({
      verdict: 'deny',
      reason: 'the subject is not system:node:dev-worker2',
    });
    expect(await review(own, { username: 'alice', groups: ['system:authenticated'] })).toMatchObject({
      verdict: 'deny',
      reason: 'sent by alice, not by a node',
    });
    const service = await csrPem('O=system:nodes, CN=system:node:dev-worker', [
      { type: 'dns', value: 'kubernetes.default.svc' },
    ]);
    expect((await review(service)).verdict).toBe('deny');
    const email = await csrPem('O=system:nodes, CN=system:node:dev-worker', [
      { type: 'email', value: 'a@b.c' },
    ]);
    expect((await review(email)).verdict).toBe('deny');
  });

  it('denies client usages, a wrong organization, and a request naming nothing', async () => {
    expect(await review(own, { usages: ['digital signature', 'client auth'] })).toMatchObject({
      verdict: 'deny',
    });
    expect(await review(own, { usages: ['digital signature', 'server auth', 'client auth'] })).toMatchObject({
      verdict: 'deny',
    });
    const masters = await csrPem('O=system:masters, CN=system:node:dev-worker', [
      { type: 'dns', value: 'dev-worker' },
    ]);
    expect(await review(masters)).toEqual({
      verdict: 'deny',
      reason: "the subject's organization is not system:nodes",
    });
    const bare = await csrPem('O=system:nodes, CN=system:node:dev-worker', []);
    expect(await review(bare)).toEqual({
      verdict: 'deny',
      reason: 'the request names no DNS name or address',
    });
  });

  it('waits for a node that has not registered or reported its address yet', async () => {
    expect(await review(own, {}, new Map())).toEqual({
      verdict: 'wait',
      reason: 'node dev-worker has not registered yet',
    });
    expect(await review(own, {}, new Map([['dev-worker', node('dev-worker')]]))).toEqual({
      verdict: 'wait',
      reason: 'node dev-worker has reported no address yet',
    });
  });

  it('looks only at requests nobody has decided yet', () => {
    const request = csr('x');
    expect(isPending(request)).toBe(true);
    expect(isPending({ ...request, status: { conditions: [{ type: 'Approved', status: 'True' }] } })).toBe(
      false,
    );
    expect(isPending({ ...request, status: { conditions: [{ type: 'Denied', status: 'True' }] } })).toBe(
      false,
    );
  });
});
