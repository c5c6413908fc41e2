// The cluster PKI of the control plane: created on the first start of the control-plane container,
// reused afterwards, and repaired file by file when something is missing or no longer fits.

import {
  X509Certificate,
  createHash,
  createPrivateKey,
  createPublicKey,
  randomBytes,
  webcrypto,
  type KeyObject,
} from 'node:crypto';
import { chmod, mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type * as X509 from '@peculiar/x509';

export interface PkiOptions {
  /** Subject alternative names of the API server's serving certificate. */
  apiServerDnsNames: string[];
  apiServerIps: string[];
  /** Validity of leaf certificates in days (CA certificates get 10 years). Default 365. */
  validityDays?: number;
}

export interface PkiPaths {
  dir: string;
  caCert: string;
  caKey: string;
  apiServerCert: string;
  apiServerKey: string;
  apiServerKubeletClientCert: string;
  apiServerKubeletClientKey: string;
  frontProxyCaCert: string;
  frontProxyCaKey: string;
  frontProxyClientCert: string;
  frontProxyClientKey: string;
  serviceAccountKey: string;
  serviceAccountPub: string;
  adminCert: string;
  adminKey: string;
  controllerManagerCert: string;
  controllerManagerKey: string;
  schedulerCert: string;
  schedulerKey: string;
}

const FILE_NAMES: Omit<PkiPaths, 'dir'> = {
  caCert: 'ca.crt',
  caKey: 'ca.key',
  apiServerCert: 'apiserver.crt',
  apiServerKey: 'apiserver.key',
  apiServerKubeletClientCert: 'apiserver-kubelet-client.crt',
  apiServerKubeletClientKey: 'apiserver-kubelet-client.key',
  frontProxyCaCert: 'front-proxy-ca.crt',
  frontProxyCaKey: 'front-proxy-ca.key',
  frontProxyClientCert: 'front-proxy-client.crt',
  frontProxyClientKey: 'front-proxy-client.key',
  serviceAccountKey: 'sa.key',
  serviceAccountPub: 'sa.pub',
  adminCert: 'admin.crt',
  adminKey: 'admin.key',
  controllerManagerCert: 'controller-manager.crt',
  controllerManagerKey: 'controller-manager.key',
  schedulerCert: 'scheduler.crt',
  schedulerKey: 'scheduler.key',
};

const DEFAULT_VALIDITY_DAYS = 365;
const CA_VALIDITY_DAYS = 3650;
const DAY_MS = 24 * 60 * 60 * 1000;
// Containers of one cluster do not share a clock source; a certificate must not be "not yet valid" elsewhere.
const BACKDATE_MS = 60 * 60 * 1000;
const KEY_MODE = 0o600;
const CERT_MODE = 0o644;
const EC_PARAMS = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;
const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';

/** Creates every missing file under dir (mode 0600 for keys, 0644 for certificates); keeps existing ones.
 *  If the API server certificate exists but lacks one of the requested SANs, it is re-issued from the existing CA. */
export async function ensurePki(dir: string, options: PkiOptions): Promise<PkiPaths> {
  const paths = { dir } as PkiPaths;
  for (const [field, name] of Object.entries(FILE_NAMES) as [keyof typeof FILE_NAMES, string][]) {
    paths[field] = join(dir, name);
  }
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const validityDays = options.validityDays ?? DEFAULT_VALIDITY_DAYS;

  const ca = await ensureCa(paths.caCert, paths.caKey, 'kubernetes');
  const frontProxyCa = await ensureCa(paths.frontProxyCaCert, paths.frontProxyCaKey, 'front-proxy-ca');

  const dnsNames = unique(options.apiServerDnsNames);
  const ips = unique(options.apiServerIps);
  await ensureLeaf(ca, paths.apiServerCert, paths.apiServerKey, validityDays, {
    commonName: 'kube-apiserver',
    organizations: [],
    extendedKeyUsage: SERVER_AUTH,
    dnsNames,
    ips,
  });
  const clients: [CaMaterial, string, string, string, string[]][] = [
    [
      ca,
      paths.apiServerKubeletClientCert,
      paths.apiServerKubeletClientKey,
      'kube-apiserver-kubelet-client',
      ['system:masters'],
    ],
    [frontProxyCa, paths.frontProxyClientCert, paths.frontProxyClientKey, 'front-proxy-client', []],
    [ca, paths.adminCert, paths.adminKey, 'kubernetes-admin', ['system:masters']],
    // The controller manager holds the CA key and can mint any identity, so system:masters grants it
    // nothing new; it lets every controller run on one identity instead of creating a service account
    // and token per controller, which holds back the start of the CSR approver by seconds.
    [
      ca,
      paths.controllerManagerCert,
      paths.controllerManagerKey,
      'system:kube-controller-manager',
      ['system:masters'],
    ],
    [ca, paths.schedulerCert, paths.schedulerKey, 'system:kube-scheduler', []],
  ];
  for (const [issuer, certPath, keyPath, commonName, organizations] of clients) {
    await ensureLeaf(issuer, certPath, keyPath, validityDays, {
      commonName,
      organizations,
      extendedKeyUsage: CLIENT_AUTH,
    });
  }

  await ensureServiceAccountKeys(paths.serviceAccountKey, paths.serviceAccountPub);
  return paths;
}

/** kubeadm's CA pin: "sha256:" + hex SHA-256 of the DER SubjectPublicKeyInfo of the CA certificate (PEM input). */
export function caCertHash(caCertPem: string): string {
  // The raw bytes as they appear in the certificate, like kubeadm, rather than a re-encoding of the key.
  const spki = rawSubjectPublicKeyInfo(new X509Certificate(caCertPem).raw);
  return `sha256:${createHash('sha256').update(spki).digest('hex')}`;
}

/** Issue a client certificate signed by the given CA (PEM in, PEM out), for users such as the admin. */
export async function issueClientCertificate(
  caCertPem: string,
  caKeyPem: string,
  commonName: string,
  organizations: string[],
  validityDays: number = DEFAULT_VALIDITY_DAYS,
): Promise<{ cert: string; key: string }> {
  const ca = await loadCa(caCertPem, caKeyPem);
  const key = await generateKeyPem();
  const cert = await issueLeaf(ca, key, validityDays, {
    commonName,
    organizations,
    extendedKeyUsage: CLIENT_AUTH,
  });
  return { cert, key };
}

/** A new self-signed CA, for servers that bring their own trust (webhooks, aggregated APIs). */
export async function createCertificateAuthority(commonName: string): Promise<{ cert: string; key: string }> {
  const key = await generateKeyPem();
  return { cert: await createCaCertificate(key, commonName), key };
}

/** A serving certificate for the given DNS names, signed by the given CA (PEM in, PEM out). */
export async function issueServingCertificate(
  caCertPem: string,
  caKeyPem: string,
  dnsNames: string[],
  validityDays: number = DEFAULT_VALIDITY_DAYS,
): Promise<{ cert: string; key: string }> {
  const ca = await loadCa(caCertPem, caKeyPem);
  const key = await generateKeyPem();
  const cert = await issueLeaf(ca, key, validityDays, {
    commonName: dnsNames[0] ?? 'server',
    organizations: [],
    extendedKeyUsage: SERVER_AUTH,
    dnsNames: unique(dnsNames),
  });
  return { cert, key };
}

interface CaMaterial {
  certPem: string;
  cert: X509Certificate;
  signingKey: webcrypto.CryptoKey;
}

interface LeafProfile {
  commonName: string;
  organizations: string[];
  extendedKeyUsage: string;
  dnsNames?: string[];
  ips?: string[];
}

let x509Module: Promise<typeof X509> | undefined;

/** Loads the certificate library once, with the prerequisites it expects from its environment. */
function loadX509(): Promise<typeof X509> {
  x509Module ??= (async () => {
    // The library's dependency injection needs the Reflect metadata API loaded first.
    await import('reflect-metadata');
    const x509 = await import('@peculiar/x509');
    // Node 18 has no global crypto without a flag, so the provider is set explicitly.
    x509.cryptoProvider.set(webcrypto);
    return x509;
  })();
  return x509Module;
}

async function ensureCa(certPath: string, keyPath: string, commonName: string): Promise<CaMaterial> {
  let keyPem = await readValidKey(keyPath);
  if (!keyPem) {
    keyPem = await generateKeyPem();
    await writeAtomic(keyPath, keyPem, KEY_MODE);
  }
  const existingPem = await readIfExists(certPath);
  const existing = existingPem === undefined ? undefined : parseCertificate(existingPem);
  if (existingPem && existing?.ca && samePublicKey(existing.publicKey, publicKeyOf(keyPem))) {
    return loadCa(existingPem, keyPem);
  }
  const certPem = await createCaCertificate(keyPem, commonName);
  await writeAtomic(certPath, certPem, CERT_MODE);
  return loadCa(certPem, keyPem);
}

async function createCaCertificate(keyPem: string, commonName: string): Promise<string> {
  const x509 = await loadX509();
  const spki = spkiDer(publicKeyOf(keyPem));
  const { notBefore, notAfter } = validity(CA_VALIDITY_DAYS);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    subject: [{ CN: [commonName] }],
    issuer: [{ CN: [commonName] }],
    notBefore,
    notAfter,
    publicKey: spki,
    signingKey: await signingKeyOf(keyPem),
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(spki),
    ],
  });
  return toPem('CERTIFICATE', cert.rawData);
}

async function loadCa(certPem: string, keyPem: string): Promise<CaMaterial> {
  const cert = new X509Certificate(certPem);
  if (!samePublicKey(cert.publicKey, publicKeyOf(keyPem))) {
    throw new Error(`the CA key does not belong to the CA certificate (${cert.subject})`);
  }
  return { certPem, cert, signingKey: await signingKeyOf(keyPem) };
}

async function ensureLeaf(
  ca: CaMaterial,
  certPath: string,
  keyPath: string,
  validityDays: number,
  profile: LeafProfile,
): Promise<void> {
  let keyPem = await readValidKey(keyPath);
  if (!keyPem) {
    keyPem = await generateKeyPem();
    await writeAtomic(keyPath, keyPem, KEY_MODE);
  }
  const certPem = await readIfExists(certPath);
  const existing = certPem === undefined ? undefined : parseCertificate(certPem);
  if (existing && leafStillFits(existing, ca, keyPem, profile)) return;
  await writeAtomic(certPath, await issueLeaf(ca, keyPem, validityDays, profile), CERT_MODE);
}

/** An existing certificate is kept while it belongs to its key, comes from the current CA and names every host. */
function leafStillFits(cert: X509Certificate, ca: CaMaterial, keyPem: string, profile: LeafProfile): boolean {
  if (!samePublicKey(cert.publicKey, publicKeyOf(keyPem))) return false;
  if (cert.issuer !== ca.cert.subject || !cert.verify(ca.cert.publicKey)) return false;
  const hostOptions = { subject: 'never', wildcards: false } as const;
  if (profile.dnsNames?.some((name) => cert.checkHost(name, hostOptions) === undefined)) return false;
  if (profile.ips?.some((ip) => cert.checkIP(ip) === undefined)) return false;
  return true;
}

async function issueLeaf(
  ca: CaMaterial,
  keyPem: string,
  validityDays: number,
  profile: LeafProfile,
): Promise<string> {
  const x509 = await loadX509();
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKeyId = caCert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
  const extensions: X509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(
      x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment,
      true,
    ),
    new x509.ExtendedKeyUsageExtension([profile.extendedKeyUsage]),
    caKeyId
      ? new x509.AuthorityKeyIdentifierExtension(caKeyId)
      : await x509.AuthorityKeyIdentifierExtension.create(spkiDer(ca.cert.publicKey)),
  ];
  const altNames: X509.JsonGeneralName[] = [
    ...(profile.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(profile.ips ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  if (altNames.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(altNames));
  const { notBefore, notAfter } = validity(validityDays);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    // Organizations before the common name, the usual order in Kubernetes client certificates.
    subject: [...profile.organizations.map((o) => ({ O: [o] })), { CN: [profile.commonName] }],
    // The CA's own encoding of its name, so that issuer and subject compare equal byte for byte.
    issuer: caCert.subjectName,
    notBefore,
    notAfter,
    publicKey: spkiDer(publicKeyOf(keyPem)),
    signingKey: ca.signingKey,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions,
  });
  return toPem('CERTIFICATE', cert.rawData);
}

async function ensureServiceAccountKeys(keyPath: string, pubPath: string): Promise<void> {
  let keyPem = await readValidKey(keyPath);
  if (!keyPem) {
    keyPem = await generateKeyPem();
    await writeAtomic(keyPath, keyPem, KEY_MODE);
  }
  const publicKey = publicKeyOf(keyPem);
  const pubPem = await readIfExists(pubPath);
  if (pubPem !== undefined && samePublicKey(tryPublicKey(pubPem), publicKey)) return;
  await writeAtomic(pubPath, toPem('PUBLIC KEY', spkiDer(publicKey)), CERT_MODE);
}

async function generateKeyPem(): Promise<string> {
  const pair = await webcrypto.subtle.generateKey(EC_PARAMS, true, ['sign', 'verify']);
  return toPem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', pair.privateKey));
}

function signingKeyOf(keyPem: string): Promise<webcrypto.CryptoKey> {
  const der = createPrivateKey(keyPem).export({ type: 'pkcs8', format: 'der' });
  return webcrypto.subtle.importKey('pkcs8', der, EC_PARAMS, true, ['sign']);
}

function publicKeyOf(keyPem: string): KeyObject {
  return createPublicKey(createPrivateKey(keyPem));
}

function spkiDer(key: KeyObject): Uint8Array {
  return new Uint8Array(key.export({ type: 'spki', format: 'der' }));
}

function samePublicKey(a: KeyObject | undefined, b: KeyObject): boolean {
  return a !== undefined && Buffer.from(spkiDer(a)).equals(Buffer.from(spkiDer(b)));
}

function tryPublicKey(pem: string): KeyObject | undefined {
  try {
    return createPublicKey(pem);
  } catch {
    return undefined;
  }
}

function parseCertificate(pem: string): X509Certificate | undefined {
  try {
    return new X509Certificate(pem);
  } catch {
    return undefined;
  }
}

/** A key file that is missing or unreadable (for instance cut short by a crash) is treated as absent. */
async function readValidKey(path: string): Promise<string | undefined> {
  const pem = await readIfExists(path);
  if (pem === undefined) return undefined;
  try {
    const key = createPrivateKey(pem);
    return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1'
      ? pem
      : undefined;
  } catch {
    return undefined;
  }
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** A reader never sees half a file: the content goes to a temporary name in the same directory first. */
async function writeAtomic(path: string, content: string, mode: number): Promise<void> {
  const temp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await writeFile(temp, content, { mode });
    // The umask filters the mode given at creation; the exact mode is part of the contract.
    await chmod(temp, mode);
    await rename(temp, path);
  } catch (error) {
    await unlink(temp).catch(() => undefined);
    throw error;
  }
}

function toPem(label: string, der: ArrayBuffer | Uint8Array): string {
  const lines =
    Buffer.from(der as Uint8Array)
      .toString('base64')
      .match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join('\n')}\n-----END ${label}-----\n`;
}

/** 16 random bytes read as a positive integer without a leading zero byte, as DER wants it. */
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] ?? 0) & 0x7f || 0x01;
  return bytes.toString('hex');
}

function validity(days: number): { notBefore: Date; notAfter: Date } {
  // Whole seconds: certificate times carry no fractions.
  const now = Math.floor(Date.now() / 1000) * 1000;
  return { notBefore: new Date(now - BACKDATE_MS), notAfter: new Date(now + days * DAY_MS) };
}

function unique(values: string[]): string[] {
  return [...new Set(values)];
}

/** The SubjectPublicKeyInfo element of a DER certificate, byte for byte. */
function rawSubjectPublicKeyInfo(der: Uint8Array): Uint8Array {
  const certificate = derElement(der, 0);
  const tbs = derElement(der, certificate.contentStart);
  let offset = tbs.contentStart;
  // An explicit [0] version comes first in v3 certificates.
  if (der[offset] === 0xa0) offset = derElement(der, offset).end;
  // Then serialNumber, signature, issuer, validity and subject.
  for (let i = 0; i < 5; i++) offset = derElement(der, offset).end;
  const spki = derElement(der, offset);
  if (der[offset] !== 0x30 || spki.end > tbs.end) throw new Error('malformed certificate');
  return der.subarray(offset, spki.end);
}

function derElement(der: Uint8Array, offset: number): { contentStart: number; end: number } {
  const byte = (index: number): number => {
    const value = der[index];
    if (value === undefined) throw new Error('malformed certificate: truncated DER');
    return value;
  };
  let length = byte(offset + 1);
  let contentStart = offset + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count < 1 || count > 4) throw new Error('malformed certificate: unsupported DER length');
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + byte(contentStart++);
  }
  const end = contentStart + length;
  if (end > der.length) throw new Error('malformed certificate: truncated DER');
  return { contentStart, end };
}
