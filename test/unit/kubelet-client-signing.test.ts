import { createPrivateKey, X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { clientCertificateTimes, kubeletClientPermission } from '../../node-agent/kubelet-client-signing.js';
import { KUBELET_CLIENT_SIGNER, kubeletClientKey } from '../../node-agent/kubelet-client.js';
import type { CertificateSigningRequest } from '../../node-agent/kubelet-serving.js';
import {
  createCaCertificate,
  generateKeyPem,
  issueForRequest,
  loadCa,
  type RequestedIdentity,
} from '../../node-agent/x509.js';

const identity: RequestedIdentity = {
  commonNames: ['system:node:w1'],
  organizations: ['system:nodes'],
  dnsNames: [],
  ips: [],
  otherNames: [],
};

function request(spec: Partial<CertificateSigningRequest['spec']> = {}): CertificateSigningRequest {
  return {
    metadata: { name: 'node-csr-x' },
    spec: {
      request: '',
      signerName: KUBELET_CLIENT_SIGNER,
      username: 'system:bootstrap:abcdef',
      groups: ['system:bootstrappers', 'system:authenticated'],
      usages: ['digital signature', 'client auth'],
      ...spec,
    },
  };
}

describe('kubeletClientPermission', () => {
  it('asks for nodeclient for a bootstrap token and selfnodeclient for a node renewing its own', () => {
    expect(kubeletClientPermission(request(), identity)).toBe('nodeclient');
    expect(kubeletClientPermission(request({ username: 'system:node:w1' }), identity)).toBe('selfnodeclient');
    // Another node's credentials make it a plain nodeclient request, which a node is not allowed.
    expect(kubeletClientPermission(request({ username: 'system:node:w2' }), identity)).toBe('nodeclient');
  });

  it('takes the usage sets upstream takes, in any order, and no other', () => {
    const usages = (u: string[]) => kubeletClientPermission(request({ usages: u }), identity);
    expect(usages(['client auth', 'key encipherment', 'digital signature'])).toBe('nodeclient');
    expect(usages(['client auth', 'digital signature'])).toBe('nodeclient');
    expect(usages(['client auth'])).toBeUndefined();
    expect(usages(['digital signature', 'client auth', 'server auth'])).toBeUndefined();
  });

  it('leaves alone what is not exactly a kubelet client request', () => {
    const not = (
      changes: Partial<RequestedIdentity>,
      spec: Partial<CertificateSigningRequest['spec']> = {},
    ) => kubeletClientPermission(request(spec), { ...identity, ...changes });
    expect(not({}, { signerName: 'kubernetes.io/kubelet-serving' })).toBeUndefined();
    expect(not({ commonNames: ['admin'] })).toBeUndefined();
    expect(not({ commonNames: ['system:node:w1', 'system:node:w2'] })).toBeUndefined();
    expect(not({ organizations: ['system:masters'] })).toBeUndefined();
    expect(not({ organizations: ['system:nodes', 'system:masters'] })).toBeUndefined();
    expect(not({ dnsNames: ['w1'] })).toBeUndefined();
    expect(not({ ips: ['10.0.0.1'] })).toBeUndefined();
    expect(not({ otherNames: ['email:a@b'] })).toBeUndefined();
    expect(kubeletClientPermission(request(), undefined)).toBeUndefined();
  });
});

describe('clientCertificateTimes', () => {
  const now = Date.UTC(2026, 0, 1, 12, 0, 0, 400);
  const farCa = new Date(Date.UTC(2036, 0, 1));
  const minute = 60_000;

  it('backdates five minutes and lasts a year less those minutes, in whole seconds', () => {
    const { notBefore, notAfter } = clientCertificateTimes(now, undefined, farCa);
    const second = Date.UTC(2026, 0, 1, 12, 0, 0);
    expect(notBefore.getTime()).toBe(second - 5 * minute);
    expect(notAfter.getTime()).toBe(second + 365 * 24 * 60 * minute - 5 * minute);
  });

  it('honours a shorter expirationSeconds, ten minutes at least, and never a longer one', () => {
    const second = Date.UTC(2026, 0, 1, 12, 0, 0);
    expect(clientCertificateTimes(now, 3600, farCa).notAfter.getTime()).toBe(second + 60 * minute);
    expect(clientCertificateTimes(now, 60, farCa).notAfter.getTime()).toBe(second + 10 * minute);
    expect(clientCertificateTimes(now, 10 * 365 * 24 * 3600, farCa).notAfter.getTime()).toBe(
      second + 365 * 24 * 60 * minute - 5 * minute,
    );
  });

  it('ends no later than the CA', () => {
    const soon = new Date(Date.UTC(2026, 1, 1));
    expect(clientCertificateTimes(now, undefined, soon).notAfter).toEqual(soon);
  });
});

describe('issueForRequest', () => {
  it("certifies the request's key and subject for client use, signed by the CA", async () => {
    const caKey = await generateKeyPem();
    const ca = await loadCa(await createCaCertificate(caKey, 'kubernetes'), caKey);
    const { keyPem, csr } = await kubeletClientKey('w1');
    const pem = await issueForRequest(ca, Buffer.from(csr.spec.request, 'base64').toString('utf8'), {
      ...clientCertificateTimes(Date.now(), undefined, new Date(ca.cert.validTo)),
      usage: 'client',
      keyUsages: ['digital signature'],
    });
    const cert = new X509Certificate(pem);
    expect(cert.verify(ca.cert.publicKey)).toBe(true);
    expect(cert.checkPrivateKey(createPrivateKey(keyPem))).toBe(true);
    expect(cert.subject.split('\n').sort()).toEqual(['CN=system:node:w1', 'O=system:nodes']);
    expect(cert.issuer).toBe(ca.cert.subject);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    expect(cert.ca).toBe(false);
  });
});
