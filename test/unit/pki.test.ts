import { X509Certificate, createHash, createPrivateKey, createPublicKey, sign, verify } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { caCertHash, ensurePki, issueClientCertificate, type PkiPaths } from '../../node-agent/pki.js';

const DNS_NAMES = [
  'localhost',
  'vind-control-plane',
  'kubernetes',
  'kubernetes.default',
  'kubernetes.default.svc',
  'kubernetes.default.svc.cluster.local',
];
const IPS = ['127.0.0.1', '172.30.0.2', '10.96.0.1'];
const OPTIONS = { apiServerDnsNames: DNS_NAMES, apiServerIps: IPS };
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const DAY_MS = 24 * 60 * 60 * 1000;

let root: string;
let pki: PkiPaths;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'vind-pki-'));
  pki = await ensurePki(join(root, 'pki'), OPTIONS);
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function certificate(path: string): Promise<X509Certificate> {
  return new X509Certificate(await readFile(path));
}

function fileEntries(paths: PkiPaths): [string, string][] {
  return Object.entries(paths).filter(([field]) => field !== 'dir');
}

async function snapshot(paths: PkiPaths): Promise<Map<string, Buffer>> {
  const contents = new Map<string, Buffer>();
  for (const [field, path] of fileEntries(paths)) contents.set(field, await readFile(path));
  return contents;
}

describe('ensurePki', () => {
  it('lays out every file under the directory with the expected modes', async () => {
    expect(pki.dir).toBe(join(root, 'pki'));
    expect((await stat(pki.dir)).mode & 0o777).toBe(0o700);
    const entries = fileEntries(pki);
    expect(entries).toHaveLength(20);
    for (const [field, path] of entries) {
      expect(path.startsWith(pki.dir + '/')).toBe(true);
      const isKey = /Key$/.test(field);
      expect((await stat(path)).mode & 0o777, field).toBe(isKey ? 0o600 : 0o644);
    }
    expect(pki.caCert).toBe(join(pki.dir, 'ca.crt'));
    expect(pki.apiServerKubeletClientKey).toBe(join(pki.dir, 'apiserver-kubelet-client.key'));
    expect(pki.serviceAccountPub).toBe(join(pki.dir, 'sa.pub'));
  });

  it('writes private keys as PKCS#8 PEM on P-256', async () => {
    for (const [field, path] of fileEntries(pki).filter(([field]) => /Key$/.test(field))) {
      const pem = await readFile(path, 'utf8');
      expect(pem.startsWith('-----BEGIN PRIVATE KEY-----\n'), field).toBe(true);
      expect(pem.trimEnd().endsWith('-----END PRIVATE KEY-----'), field).toBe(true);
      for (const line of pem.trim().split('\n')) expect(line.length).toBeLessThanOrEqual(64);
      const key = createPrivateKey(pem);
      expect(key.asymmetricKeyType).toBe('ec');
      expect(key.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    }
    expect(await readFile(pki.serviceAccountPub, 'utf8')).toMatch(/^-----BEGIN PUBLIC KEY-----\n/);
  });

  it('makes self-signed CA certificates', async () => {
    for (const [path, name] of [
      [pki.caCert, 'CN=kubernetes'],
      [pki.frontProxyCaCert, 'CN=front-proxy-ca'],
    ] as const) {
      const ca = await certificate(path);
      expect(ca.ca).toBe(true);
      expect(ca.subject).toBe(name);
      expect(ca.issuer).toBe(name);
      expect(ca.verify(ca.publicKey)).toBe(true);
      const years = (Date.parse(ca.validTo) - Date.parse(ca.validFrom)) / (365 * DAY_MS);
      expect(years).toBeGreaterThan(9.9);
      expect(years).toBeLessThan(10.1);
    }
  });

  it('issues an API server certificate for every requested name', async () => {
    const ca = await certificate(pki.caCert);
    const cert = await certificate(pki.apiServerCert);
    expect(cert.ca).toBe(false);
    expect(cert.subject).toBe('CN=kube-apiserver');
    expect(cert.issuer).toBe(ca.subject);
    expect(cert.checkIssued(ca)).toBe(true);
    expect(cert.verify(ca.publicKey)).toBe(true);
    for (const name of DNS_NAMES) expect(cert.subjectAltName).toContain(`DNS:${name}`);
    for (const ip of IPS) expect(cert.subjectAltName).toContain(`IP Address:${ip}`);
    expect(cert.checkHost('kubernetes.default.svc')).toBe('kubernetes.default.svc');
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
    expect(cert.checkHost('elsewhere.example')).toBeUndefined();
    expect(cert.keyUsage).toContain(SERVER_AUTH);
    expect(cert.checkPrivateKey(createPrivateKey(await readFile(pki.apiServerKey)))).toBe(true);

    const validFrom = Date.parse(cert.validFrom);
    const validTo = Date.parse(cert.validTo);
    expect(validFrom).toBeLessThan(Date.now() - 30 * 60 * 1000);
    expect((validTo - validFrom) / DAY_MS).toBeGreaterThan(364.9);
    expect((validTo - validFrom) / DAY_MS).toBeLessThan(365.1);
  });

  it('issues client certificates with the identities Kubernetes expects', async () => {
    const ca = await certificate(pki.caCert);
    const frontProxyCa = await certificate(pki.frontProxyCaCert);
    const expected: [string, string, X509Certificate][] = [
      [pki.apiServerKubeletClientCert, 'O=system:masters\nCN=kube-apiserver-kubelet-client', ca],
      [pki.adminCert, 'O=system:masters\nCN=kubernetes-admin', ca],
      [pki.controllerManagerCert, 'O=system:masters\nCN=system:kube-controller-manager', ca],
      [pki.schedulerCert, 'CN=system:kube-scheduler', ca],
      [pki.frontProxyClientCert, 'CN=front-proxy-client', frontProxyCa],
    ];
    for (const [path, subject, issuer] of expected) {
      const cert = await certificate(path);
      expect(cert.subject, path).toBe(subject);
      expect(cert.verify(issuer.publicKey), path).toBe(true);
      expect(cert.keyUsage, path).toEqual([CLIENT_AUTH]);
      expect(cert.serialNumber, path).toMatch(/^[0-7][0-9A-F]{31}$/);
    }
  });

  it('signs the front-proxy client with the front-proxy CA only', async () => {
    const client = await certificate(pki.frontProxyClientCert);
    expect(client.verify((await certificate(pki.frontProxyCaCert)).publicKey)).toBe(true);
    expect(client.verify((await certificate(pki.caCert)).publicKey)).toBe(false);
  });

  it('writes a service-account key pair that belongs together', async () => {
    const data = Buffer.from('a service account token');
    const signature = sign('sha256', data, createPrivateKey(await readFile(pki.serviceAccountKey)));
    const publicKey = createPublicKey(await readFile(pki.serviceAccountPub));
    expect(verify('sha256', data, publicKey, signature)).toBe(true);
    expect(verify('sha256', Buffer.from('something else'), publicKey, signature)).toBe(false);
  });

  it('keeps every file byte for byte on a second call', async () => {
    const dir = join(root, 'again');
    const first = await ensurePki(dir, OPTIONS);
    const before = await snapshot(first);
    const second = await ensurePki(dir, OPTIONS);
    expect(second).toEqual(first);
    expect(await snapshot(second)).toEqual(before);
  });

  it('re-issues only the API server certificate when a name is added', async () => {
    const dir = join(root, 'extra-san');
    const paths = await ensurePki(dir, OPTIONS);
    const before = await snapshot(paths);
    await ensurePki(dir, {
      apiServerDnsNames: [...DNS_NAMES, 'api.vind.test'],
      apiServerIps: [...IPS, '192.168.50.10'],
    });
    const after = await snapshot(paths);
    expect(after.get('apiServerCert')).not.toEqual(before.get('apiServerCert'));
    for (const [field, content] of before) {
      if (field !== 'apiServerCert') expect(after.get(field), field).toEqual(content);
    }
    const cert = await certificate(paths.apiServerCert);
    expect(cert.subjectAltName).toContain('DNS:api.vind.test');
    expect(cert.subjectAltName).toContain('IP Address:192.168.50.10');
    for (const name of DNS_NAMES) expect(cert.subjectAltName).toContain(`DNS:${name}`);
    expect(cert.verify((await certificate(paths.caCert)).publicKey)).toBe(true);
    expect((await stat(paths.apiServerCert)).mode & 0o777).toBe(0o644);
  });

  it('renews leaf certificates that have less than 30 days left, keeping the CAs and keys', async () => {
    const dir = join(root, 'short-lived');
    const paths = await ensurePki(dir, { ...OPTIONS, validityDays: 20 });
    const before = await snapshot(paths);
    const oldExpiry = Date.parse((await certificate(paths.adminCert)).validTo);
    // The next start: 20 days is under the renewal margin, so every leaf comes out new, for a year.
    await ensurePki(dir, OPTIONS);
    const after = await snapshot(paths);
    for (const field of ['caCert', 'caKey', 'frontProxyCaCert', 'adminKey', 'serviceAccountKey'] as const) {
      expect(after.get(field), field).toEqual(before.get(field));
    }
    for (const field of ['apiServerCert', 'adminCert', 'schedulerCert', 'frontProxyClientCert'] as const) {
      expect(after.get(field), field).not.toEqual(before.get(field));
      const renewed = await certificate(paths[field]);
      expect(
        renewed.verify(
          (await certificate(renewed.issuer.includes('front-proxy') ? paths.frontProxyCaCert : paths.caCert))
            .publicKey,
        ),
      ).toBe(true);
    }
    expect(Date.parse((await certificate(paths.adminCert)).validTo) - oldExpiry).toBeGreaterThan(
      300 * DAY_MS,
    );
  });

  it('re-issues the certificates of a CA that had to be created again', async () => {
    const dir = join(root, 'new-ca');
    const paths = await ensurePki(dir, OPTIONS);
    const before = await snapshot(paths);
    await unlink(paths.caKey);
    await ensurePki(dir, OPTIONS);
    const after = await snapshot(paths);
    expect(after.get('caCert')).not.toEqual(before.get('caCert'));
    const ca = await certificate(paths.caCert);
    for (const path of [paths.apiServerCert, paths.adminCert, paths.schedulerCert]) {
      expect((await certificate(path)).verify(ca.publicKey), path).toBe(true);
    }
    // The front-proxy CA was intact, so its client certificate stays as it was.
    expect(after.get('frontProxyClientCert')).toEqual(before.get('frontProxyClientCert'));
  });
});

describe('caCertHash', () => {
  it('pins the SubjectPublicKeyInfo of the CA like kubeadm', async () => {
    const pem = await readFile(pki.caCert, 'utf8');
    const spki = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
    const hash = caCertHash(pem);
    expect(hash).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(hash).toBe(`sha256:${createHash('sha256').update(spki).digest('hex')}`);
    expect(caCertHash(await readFile(pki.frontProxyCaCert, 'utf8'))).not.toBe(hash);
  });
});

describe('issueClientCertificate', () => {
  it('issues a certificate for the given user, signed by the CA', async () => {
    const caPem = await readFile(pki.caCert, 'utf8');
    const { cert, key } = await issueClientCertificate(
      caPem,
      await readFile(pki.caKey, 'utf8'),
      'jane',
      ['developers', 'system:masters'],
      30,
    );
    const issued = new X509Certificate(cert);
    expect(issued.verify(new X509Certificate(caPem).publicKey)).toBe(true);
    expect(issued.subject).toBe('O=developers\nO=system:masters\nCN=jane');
    expect(issued.keyUsage).toEqual([CLIENT_AUTH]);
    expect(key).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
    expect(issued.checkPrivateKey(createPrivateKey(key))).toBe(true);
    const days = (Date.parse(issued.validTo) - Date.parse(issued.validFrom)) / DAY_MS;
    expect(days).toBeGreaterThan(29.9);
    expect(days).toBeLessThan(30.1);
  });

  it('refuses a CA key that does not belong to the CA certificate', async () => {
    await expect(
      issueClientCertificate(
        await readFile(pki.caCert, 'utf8'),
        await readFile(pki.frontProxyCaKey, 'utf8'),
        'jane',
        [],
      ),
    ).rejects.toThrow(/does not belong/);
  });
});
