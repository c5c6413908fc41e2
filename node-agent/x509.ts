// Certificate and key helpers for the PKI, on @peculiar/x509 and node:crypto: ECDSA P-256 keys,
// PEM encoding, CA and leaf certificates, and the atomic file writes the PKI directory relies on.
// Nothing here decides which files exist or when they are reused; pki.ts does.

import {
  X509Certificate,
  createPrivateKey,
  createPublicKey,
  randomBytes,
  webcrypto,
  type KeyObject,
} from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type * as X509 from '@peculiar/x509';

/** Whether a leaf certificate authenticates a client or a server (its extended key usage). */
export type LeafUsage = 'client' | 'server';

/** What goes into a leaf certificate besides its key and issuer. */
export interface LeafTemplate {
  commonName: string;
  organizations: readonly string[];
  usage: LeafUsage;
  dnsNames?: readonly string[];
  ips?: readonly string[];
}

/** A CA ready to sign: its certificate and its private key. */
export interface CaMaterial {
  certPem: string;
  cert: X509Certificate;
  signingKey: webcrypto.CryptoKey;
}

const CA_VALIDITY_DAYS = 3650;
const DAY_MS = 24 * 60 * 60 * 1000;
// Containers of one cluster do not share a clock source; a certificate must not be "not yet valid" elsewhere.
const BACKDATE_MS = 60 * 60 * 1000;
const EC_PARAMS = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;
const EXTENDED_KEY_USAGE: Record<LeafUsage, string> = {
  server: '1.3.6.1.5.5.7.3.1',
  client: '1.3.6.1.5.5.7.3.2',
};

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

/** A self-signed CA certificate for the key, valid for 10 years. */
export async function createCaCertificate(keyPem: string, commonName: string): Promise<string> {
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

/** Pairs a CA certificate with its key; refuses a key that belongs to another certificate. */
export async function loadCa(certPem: string, keyPem: string): Promise<CaMaterial> {
  const cert = new X509Certificate(certPem);
  if (!samePublicKey(cert.publicKey, publicKeyOf(keyPem))) {
    throw new Error(`the CA key does not belong to the CA certificate (${cert.subject})`);
  }
  return { certPem, cert, signingKey: await signingKeyOf(keyPem) };
}

/** A leaf certificate for the key, signed by the CA (PEM out). */
export async function issueLeaf(
  ca: CaMaterial,
  keyPem: string,
  validityDays: number,
  template: LeafTemplate,
): Promise<string> {
  const { notBefore, notAfter } = validity(validityDays);
  return issue(ca, spkiDer(publicKeyOf(keyPem)), { notBefore, notAfter }, template, [
    'digital signature',
    'key encipherment',
  ]);
}

/** Key usages by the names the CSR API gives them. */
export type KeyUsageName = 'digital signature' | 'key encipherment';

/** What a signer puts in a certificate for a request, besides the request's key and subject. */
export interface RequestSigning {
  notBefore: Date;
  notAfter: Date;
  usage: LeafUsage;
  keyUsages: readonly KeyUsageName[];
}

/** A certificate for the key and subject of a PKCS#10 request, signed by the CA (PEM out). */
export async function issueForRequest(
  ca: CaMaterial,
  requestPem: string,
  signing: RequestSigning,
): Promise<string> {
  const x509 = await loadX509();
  const request = new x509.Pkcs10CertificateRequest(requestPem);
  const subject = request.subjectName.toJSON();
  const values = (type: string) => subject.flatMap((part) => part[type] ?? []);
  const [commonName] = values('CN');
  if (commonName === undefined) throw new Error('the request names no common name');
  return issue(
    ca,
    new Uint8Array(request.publicKey.rawData),
    signing,
    { commonName, organizations: values('O'), usage: signing.usage },
    signing.keyUsages,
  );
}

async function issue(
  ca: CaMaterial,
  publicKey: Uint8Array,
  times: { notBefore: Date; notAfter: Date },
  template: LeafTemplate,
  keyUsages: readonly KeyUsageName[],
): Promise<string> {
  const x509 = await loadX509();
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKeyId = caCert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId;
  const usageFlags: Record<KeyUsageName, number> = {
    'digital signature': x509.KeyUsageFlags.digitalSignature,
    'key encipherment': x509.KeyUsageFlags.keyEncipherment,
  };
  const extensions: X509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(
      keyUsages.reduce((flags, u) => flags | usageFlags[u], 0),
      true,
    ),
    new x509.ExtendedKeyUsageExtension([EXTENDED_KEY_USAGE[template.usage]]),
    caKeyId
      ? new x509.AuthorityKeyIdentifierExtension(caKeyId)
      : await x509.AuthorityKeyIdentifierExtension.create(spkiDer(ca.cert.publicKey)),
  ];
  const altNames: X509.JsonGeneralName[] = [
    ...(template.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    ...(template.ips ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  if (altNames.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(altNames));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerial(),
    // Organizations before the common name, the usual order in Kubernetes client certificates.
    subject: [...template.organizations.map((o) => ({ O: [o] })), { CN: [template.commonName] }],
    // The CA's own encoding of its name, so that issuer and subject compare equal byte for byte.
    issuer: caCert.subjectName,
    notBefore: times.notBefore,
    notAfter: times.notAfter,
    publicKey,
    signingKey: ca.signingKey,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions,
  });
  return toPem('CERTIFICATE', cert.rawData);
}

/** A new ECDSA P-256 private key as PKCS#8 PEM. */
export async function generateKeyPem(): Promise<string> {
  const pair = await webcrypto.subtle.generateKey(EC_PARAMS, true, ['sign', 'verify']);
  return toPem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', pair.privateKey));
}

/** Whether the PEM holds a private key of the kind generateKeyPem makes; false if it does not parse. */
export function isP256PrivateKey(pem: string): boolean {
  try {
    const key = createPrivateKey(pem);
    return key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1';
  } catch {
    return false;
  }
}

function signingKeyOf(keyPem: string): Promise<webcrypto.CryptoKey> {
  const der = createPrivateKey(keyPem).export({ type: 'pkcs8', format: 'der' });
  return webcrypto.subtle.importKey('pkcs8', der, EC_PARAMS, true, ['sign']);
}

export function publicKeyOf(keyPem: string): KeyObject {
  return createPublicKey(createPrivateKey(keyPem));
}

export function publicKeyPem(key: KeyObject): string {
  return toPem('PUBLIC KEY', spkiDer(key));
}

function spkiDer(key: KeyObject): Uint8Array {
  return new Uint8Array(key.export({ type: 'spki', format: 'der' }));
}

export function samePublicKey(a: KeyObject | undefined, b: KeyObject): boolean {
  return a !== undefined && Buffer.from(spkiDer(a)).equals(Buffer.from(spkiDer(b)));
}

/** The public key in the PEM, or undefined if it does not parse. */
export function parsePublicKey(pem: string): KeyObject | undefined {
  try {
    return createPublicKey(pem);
  } catch {
    return undefined;
  }
}

/** The certificate in the PEM, or undefined if it does not parse. */
export function parseCertificate(pem: string): X509Certificate | undefined {
  try {
    return new X509Certificate(pem);
  } catch {
    return undefined;
  }
}

export async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
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

/** The SubjectPublicKeyInfo element of a DER certificate, byte for byte. */
export function rawSubjectPublicKeyInfo(der: Uint8Array): Uint8Array {
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

/** A PKCS#10 request, signed with the key, for the subject CN=commonName, O=each organization. */
export async function createCertificateRequest(
  keyPem: string,
  commonName: string,
  organizations: readonly string[],
): Promise<string> {
  const x509 = await loadX509();
  const name = [{ CN: [commonName] }, ...organizations.map((o) => ({ O: [o] }))];
  const publicKey = await webcrypto.subtle.importKey('spki', spkiDer(publicKeyOf(keyPem)), EC_PARAMS, true, [
    'verify',
  ]);
  const request = await x509.Pkcs10CertificateRequestGenerator.create({
    name,
    keys: { privateKey: await signingKeyOf(keyPem), publicKey },
    signingAlgorithm: SIGNING_ALGORITHM,
  });
  return toPem('CERTIFICATE REQUEST', request.rawData);
}

/** What a PKCS#10 certificate request asks to be certified as. */
export interface RequestedIdentity {
  commonNames: string[];
  organizations: string[];
  dnsNames: string[];
  ips: string[];
  /** Email addresses, URIs and other names: never asked for by a kubelet. */
  otherNames: string[];
}

/** Reads a PEM certificate request (after checking its self-signature); undefined when it is not one. */
export async function parseCertificateRequest(pem: string): Promise<RequestedIdentity | undefined> {
  const x509 = await loadX509();
  let request: X509.Pkcs10CertificateRequest;
  try {
    request = new x509.Pkcs10CertificateRequest(pem);
    if (!(await request.verify())) return undefined;
  } catch {
    return undefined;
  }
  const subject = request.subjectName.toJSON();
  const values = (type: string) => subject.flatMap((part) => part[type] ?? []);
  const identity: RequestedIdentity = {
    commonNames: values('CN'),
    organizations: values('O'),
    dnsNames: [],
    ips: [],
    otherNames: [],
  };
  // A request's extensions come back untyped: the SAN extension is read again from its raw bytes.
  const raw = request.getExtension('2.5.29.17');
  const altNames = raw ? new x509.SubjectAlternativeNameExtension(raw.rawData) : undefined;
  for (const name of altNames?.names.toJSON() ?? []) {
    if (name.type === 'dns') identity.dnsNames.push(name.value);
    else if (name.type === 'ip') identity.ips.push(name.value);
    else identity.otherNames.push(`${name.type}:${name.value}`);
  }
  return identity;
}
