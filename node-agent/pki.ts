// The cluster PKI of the control plane: created on the first start of the control-plane container,
// reused afterwards, and repaired file by file when something is missing or no longer fits.
// Which files exist is the table in pki-profiles.ts; the certificate mechanics are in x509.ts.

import { X509Certificate, createHash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import {
  CERT_FILE_MODE,
  DEFAULT_VALIDITY_DAYS,
  KEY_FILE_MODE,
  PKI_DIR_MODE,
  PKI_PROFILES,
  pkiPaths,
  type PkiOptions,
  type PkiPaths,
} from './pki-profiles.js';
import {
  createCaCertificate,
  generateKeyPem,
  isP256PrivateKey,
  issueLeaf,
  loadCa,
  parseCertificate,
  parsePublicKey,
  publicKeyOf,
  publicKeyPem,
  rawSubjectPublicKeyInfo,
  readIfExists,
  samePublicKey,
  type CaMaterial,
  type LeafTemplate,
} from './x509.js';
import { writeFileAtomic } from '../shared/atomic-write.js';

export type { PkiOptions, PkiPaths } from './pki-profiles.js';

/** Creates every missing file under dir (mode 0600 for keys, 0644 for certificates); keeps existing ones.
 *  If the API server certificate exists but lacks one of the requested SANs, it is re-issued from the existing CA. */
export async function ensurePki(dir: string, options: PkiOptions): Promise<PkiPaths> {
  const paths = pkiPaths(dir);
  await mkdir(dir, { recursive: true, mode: PKI_DIR_MODE });
  const validityDays = options.validityDays ?? DEFAULT_VALIDITY_DAYS;
  // By the cert field of their row, which is how leaf rows name their issuer.
  const cas = new Map<string, CaMaterial>();
  for (const profile of PKI_PROFILES) {
    switch (profile.kind) {
      case 'ca':
        cas.set(
          profile.cert.field,
          await ensureCa(paths[profile.cert.field], paths[profile.key.field], profile.commonName),
        );
        break;
      case 'leaf': {
        const issuer = cas.get(profile.issuer);
        if (!issuer) throw new Error(`${profile.cert.field}: no CA row for ${profile.issuer} before it`);
        const altNames = 'altNames' in profile ? profile.altNames(options) : undefined;
        const template: LeafTemplate = {
          commonName: profile.commonName,
          organizations: profile.organizations,
          usage: profile.usage,
          ...(altNames && { dnsNames: unique(altNames.dnsNames), ips: unique(altNames.ips) }),
        };
        await ensureLeaf(issuer, paths[profile.cert.field], paths[profile.key.field], validityDays, template);
        break;
      }
      case 'keyPair':
        await ensureKeyPair(paths[profile.key.field], paths[profile.pub.field]);
        break;
    }
  }
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
  const cert = await issueLeaf(ca, key, validityDays, { commonName, organizations, usage: 'client' });
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
    usage: 'server',
    dnsNames: unique(dnsNames),
  });
  return { cert, key };
}

async function ensureCa(certPath: string, keyPath: string, commonName: string): Promise<CaMaterial> {
  const keyPem = await ensureKey(keyPath);
  const existingPem = await readIfExists(certPath);
  const existing = existingPem === undefined ? undefined : parseCertificate(existingPem);
  if (existingPem && existing?.ca && samePublicKey(existing.publicKey, publicKeyOf(keyPem))) {
    return loadCa(existingPem, keyPem);
  }
  const certPem = await createCaCertificate(keyPem, commonName);
  await writeFileAtomic(certPath, certPem, { mode: CERT_FILE_MODE });
  return loadCa(certPem, keyPem);
}

async function ensureLeaf(
  ca: CaMaterial,
  certPath: string,
  keyPath: string,
  validityDays: number,
  template: LeafTemplate,
): Promise<void> {
  const keyPem = await ensureKey(keyPath);
  const certPem = await readIfExists(certPath);
  const existing = certPem === undefined ? undefined : parseCertificate(certPem);
  if (existing && leafStillFits(existing, ca, keyPem, template)) return;
  await writeFileAtomic(certPath, await issueLeaf(ca, keyPem, validityDays, template), {
    mode: CERT_FILE_MODE,
  });
}

/** Leaf certificates are issued anew at a start that finds less than this left of them; CAs stay. */
export const RENEW_BEFORE_MS = 30 * 24 * 3600 * 1000;

/**
 * An existing certificate is kept while it belongs to its key, comes from the current CA, names every
 * host and has more than RENEW_BEFORE_MS to live.
 */
function leafStillFits(
  cert: X509Certificate,
  ca: CaMaterial,
  keyPem: string,
  template: LeafTemplate,
): boolean {
  if (!samePublicKey(cert.publicKey, publicKeyOf(keyPem))) return false;
  if (cert.issuer !== ca.cert.subject || !cert.verify(ca.cert.publicKey)) return false;
  const hostOptions = { subject: 'never', wildcards: false } as const;
  if (template.dnsNames?.some((name) => cert.checkHost(name, hostOptions) === undefined)) return false;
  if (template.ips?.some((ip) => cert.checkIP(ip) === undefined)) return false;
  return Date.parse(cert.validTo) - Date.now() > RENEW_BEFORE_MS;
}

async function ensureKeyPair(keyPath: string, pubPath: string): Promise<void> {
  const publicKey = publicKeyOf(await ensureKey(keyPath));
  const pubPem = await readIfExists(pubPath);
  if (pubPem !== undefined && samePublicKey(parsePublicKey(pubPem), publicKey)) return;
  await writeFileAtomic(pubPath, publicKeyPem(publicKey), { mode: CERT_FILE_MODE });
}

/** The key in the file, or a new one written there. A key file that is missing or unreadable
 *  (for instance cut short by a crash) is treated as absent. */
async function ensureKey(path: string): Promise<string> {
  const existing = await readIfExists(path);
  if (existing !== undefined && isP256PrivateKey(existing)) return existing;
  const keyPem = await generateKeyPem();
  await writeFileAtomic(path, keyPem, { mode: KEY_FILE_MODE });
  return keyPem;
}

function unique(values: readonly string[]): string[] {
  return [...new Set(values)];
}
