import { describe, expect, it } from 'vitest';
import { PermanentError } from '../../shared/poll.js';
import {
  issuedCertificate,
  KUBELET_CLIENT_SIGNER,
  kubeletClientRequest,
  kubeletKubeconfig,
} from '../../node-agent/kubelet-client.js';
import { createCertificateRequest, generateKeyPem, parseCertificateRequest } from '../../node-agent/x509.js';

describe('kubelet client certificate request', () => {
  it('asks for the identity the controller manager approves for a bootstrapping node, and nothing else', async () => {
    const pem = await createCertificateRequest(await generateKeyPem(), 'system:node:w1', ['system:nodes']);
    expect(await parseCertificateRequest(pem)).toEqual({
      commonNames: ['system:node:w1'],
      organizations: ['system:nodes'],
      dnsNames: [],
      ips: [],
      otherNames: [],
    });
    const csr = kubeletClientRequest(pem);
    expect(csr.spec.signerName).toBe(KUBELET_CLIENT_SIGNER);
    expect(csr.spec.usages).toEqual(['digital signature', 'client auth']);
    expect(Buffer.from(csr.spec.request, 'base64').toString('utf8')).toBe(pem);
  });

  it('names a request by its content, so that a retried POST meets its first one', async () => {
    const pem = await createCertificateRequest(await generateKeyPem(), 'system:node:w1', ['system:nodes']);
    const other = await createCertificateRequest(await generateKeyPem(), 'system:node:w1', ['system:nodes']);
    expect(kubeletClientRequest(pem).metadata.name).toBe(kubeletClientRequest(pem).metadata.name);
    expect(kubeletClientRequest(pem).metadata.name).not.toBe(kubeletClientRequest(other).metadata.name);
    expect(kubeletClientRequest(pem).metadata.name).toMatch(/^node-csr-[\w-]{32}$/);
  });
});

describe('issuedCertificate', () => {
  const base = kubeletClientRequest('-----BEGIN CERTIFICATE REQUEST-----\n');

  it('waits while the request is pending or approved but not yet signed', () => {
    expect(issuedCertificate(base)).toBeUndefined();
    expect(
      issuedCertificate({ ...base, status: { conditions: [{ type: 'Approved', status: 'True' }] } }),
    ).toBe(undefined);
  });

  it('returns the signed certificate as PEM', () => {
    const certificate = Buffer.from('-----BEGIN CERTIFICATE-----\nabc\n').toString('base64');
    expect(issuedCertificate({ ...base, status: { conditions: [{ type: 'Approved' }], certificate } })).toBe(
      '-----BEGIN CERTIFICATE-----\nabc\n',
    );
  });

  it('gives up for good on a denied or failed request, naming it', () => {
    for (const type of ['Denied', 'Failed']) {
      const refused = { ...base, status: { conditions: [{ type, status: 'True' }] } };
      expect(() => issuedCertificate(refused)).toThrow(PermanentError);
      expect(() => issuedCertificate(refused)).toThrow(`${base.metadata.name} was ${type.toLowerCase()}`);
    }
  });
});

describe('kubeletKubeconfig', () => {
  it('points certificate and key at the one file the kubelet rotates', () => {
    const text = kubeletKubeconfig('https://10.0.0.2:6443', '/ca.crt', '/pki/kubelet-client-current.pem');
    expect(text).toContain('    server: https://10.0.0.2:6443\n');
    expect(text).toContain('    certificate-authority: /ca.crt\n');
    expect(text).toContain('    client-certificate: /pki/kubelet-client-current.pem\n');
    expect(text).toContain('    client-key: /pki/kubelet-client-current.pem\n');
    expect(text).not.toContain('token');
  });
});
