import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtemp, readFile, rm, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCertificateAuthority, ensurePki, issueServingCertificate } from '../../node-agent/pki.js';

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';

describe('issueServingCertificate', () => {
  it('issues a server-auth certificate for its DNS names from a new CA', async () => {
    const authority = await createCertificateAuthority('webhook-ca');
    const ca = new X509Certificate(authority.cert);
    expect(ca.ca).toBe(true);
    expect(ca.subject).toBe('CN=webhook-ca');

    const names = ['webhook.default.svc', 'webhook', 'webhook.default.svc'];
    const { cert, key } = await issueServingCertificate(authority.cert, authority.key, names);
    const serving = new X509Certificate(cert);
    expect(serving.ca).toBe(false);
    expect(serving.subject).toBe('CN=webhook.default.svc');
    expect(serving.issuer).toBe(ca.subject);
    expect(serving.verify(ca.publicKey)).toBe(true);
    expect(serving.keyUsage).toEqual([SERVER_AUTH]);
    expect(serving.subjectAltName).toBe('DNS:webhook.default.svc, DNS:webhook');
    expect(serving.checkPrivateKey(createPrivateKey(key))).toBe(true);
  });
});

describe('ensurePki repairs', () => {
  let root: string;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'vind-pki-repair-'));
  });

  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('treats a key file cut short as absent and re-issues only its certificate', async () => {
    const options = { apiServerDnsNames: ['localhost'], apiServerIps: ['127.0.0.1'] };
    const paths = await ensurePki(join(root, 'pki'), options);
    const adminCert = await readFile(paths.adminCert);
    const schedulerCert = await readFile(paths.schedulerCert);
    await truncate(paths.schedulerKey, 20);

    await ensurePki(paths.dir, options);
    expect(await readFile(paths.adminCert)).toEqual(adminCert);
    expect(await readFile(paths.schedulerCert)).not.toEqual(schedulerCert);
    const renewed = new X509Certificate(await readFile(paths.schedulerCert));
    expect(renewed.checkPrivateKey(createPrivateKey(await readFile(paths.schedulerKey)))).toBe(true);
    expect(renewed.verify(new X509Certificate(await readFile(paths.caCert)).publicKey)).toBe(true);
  });
});
