// The files of the cluster PKI as data: one row per certificate authority, leaf certificate or key pair.
// Adding a certificate means adding a row; its fields in PkiPaths follow from the row.

import { join } from 'node:path';
import type { LeafUsage } from './x509.js';

export interface PkiOptions {
  /** Subject alternative names of the API server's serving certificate. */
  apiServerDnsNames: string[];
  apiServerIps: string[];
  /** Validity of leaf certificates in days (CA certificates get 10 years). Default 365. */
  validityDays?: number;
}

export const DEFAULT_VALIDITY_DAYS = 365;
export const PKI_DIR_MODE = 0o700;
export const KEY_FILE_MODE = 0o600;
export const CERT_FILE_MODE = 0o644;

/** A file of the PKI: its field in PkiPaths and its name in the PKI directory. */
interface PkiFile {
  readonly field: string;
  readonly file: string;
}

interface CaProfile {
  readonly kind: 'ca';
  readonly cert: PkiFile;
  readonly key: PkiFile;
  readonly commonName: string;
}

interface LeafProfile {
  readonly kind: 'leaf';
  readonly cert: PkiFile;
  readonly key: PkiFile;
  /** The cert field of the CA row that signs this certificate; that row comes earlier in the table. */
  readonly issuer: string;
  readonly commonName: string;
  readonly organizations: readonly string[];
  readonly usage: LeafUsage;
  readonly altNames?: (options: PkiOptions) => { dnsNames: string[]; ips: string[] };
}

/** A bare key pair without a certificate. */
interface KeyPairProfile {
  readonly kind: 'keyPair';
  readonly key: PkiFile;
  readonly pub: PkiFile;
}

export type PkiProfile = CaProfile | LeafProfile | KeyPairProfile;

/** Created in this order, so a CA row must precede the leaves it issues. */
export const PKI_PROFILES = [
  {
    kind: 'ca',
    cert: { field: 'caCert', file: 'ca.crt' },
    key: { field: 'caKey', file: 'ca.key' },
    commonName: 'kubernetes',
  },
  {
    kind: 'ca',
    cert: { field: 'frontProxyCaCert', file: 'front-proxy-ca.crt' },
    key: { field: 'frontProxyCaKey', file: 'front-proxy-ca.key' },
    commonName: 'front-proxy-ca',
  },
  {
    kind: 'leaf',
    cert: { field: 'apiServerCert', file: 'apiserver.crt' },
    key: { field: 'apiServerKey', file: 'apiserver.key' },
    issuer: 'caCert',
    commonName: 'kube-apiserver',
    organizations: [],
    usage: 'server',
    altNames: (options: PkiOptions) => ({ dnsNames: options.apiServerDnsNames, ips: options.apiServerIps }),
  },
  {
    kind: 'leaf',
    cert: { field: 'apiServerKubeletClientCert', file: 'apiserver-kubelet-client.crt' },
    key: { field: 'apiServerKubeletClientKey', file: 'apiserver-kubelet-client.key' },
    issuer: 'caCert',
    commonName: 'kube-apiserver-kubelet-client',
    organizations: ['system:masters'],
    usage: 'client',
  },
  {
    kind: 'leaf',
    cert: { field: 'frontProxyClientCert', file: 'front-proxy-client.crt' },
    key: { field: 'frontProxyClientKey', file: 'front-proxy-client.key' },
    issuer: 'frontProxyCaCert',
    commonName: 'front-proxy-client',
    organizations: [],
    usage: 'client',
  },
  {
    kind: 'leaf',
    cert: { field: 'adminCert', file: 'admin.crt' },
    key: { field: 'adminKey', file: 'admin.key' },
    issuer: 'caCert',
    commonName: 'kubernetes-admin',
    organizations: ['system:masters'],
    usage: 'client',
  },
  // metrics-server serves the Metrics API behind the API server; the APIService pins the cluster CA.
  {
    kind: 'leaf',
    cert: { field: 'metricsServerCert', file: 'metrics-server.crt' },
    key: { field: 'metricsServerKey', file: 'metrics-server.key' },
    issuer: 'caCert',
    commonName: 'metrics-server.kube-system.svc',
    organizations: [],
    usage: 'server',
    altNames: () => ({
      dnsNames: ['metrics-server.kube-system.svc', 'metrics-server.kube-system.svc.cluster.local'],
      ips: [],
    }),
  },
  // The controller manager holds the CA key and can mint any identity, so system:masters grants it
  // nothing new; it lets every controller run on one identity instead of creating a service account
  // and token per controller, which holds back the start of the CSR approver by seconds.
  {
    kind: 'leaf',
    cert: { field: 'controllerManagerCert', file: 'controller-manager.crt' },
    key: { field: 'controllerManagerKey', file: 'controller-manager.key' },
    issuer: 'caCert',
    commonName: 'system:kube-controller-manager',
    organizations: ['system:masters'],
    usage: 'client',
  },
  {
    kind: 'leaf',
    cert: { field: 'schedulerCert', file: 'scheduler.crt' },
    key: { field: 'schedulerKey', file: 'scheduler.key' },
    issuer: 'caCert',
    commonName: 'system:kube-scheduler',
    organizations: [],
    usage: 'client',
  },
  // Signs service-account tokens; the API server only needs the public half to verify them.
  {
    kind: 'keyPair',
    key: { field: 'serviceAccountKey', file: 'sa.key' },
    pub: { field: 'serviceAccountPub', file: 'sa.pub' },
  },
] as const satisfies readonly PkiProfile[];

type PkiRow = (typeof PKI_PROFILES)[number];
type FieldOf<Row, Slot extends string> = Row extends { readonly [S in Slot]: { readonly field: infer F } }
  ? F
  : never;

/** Every field of PkiPaths except dir, e.g. 'caCert' or 'serviceAccountPub'. */
export type PkiFileField = FieldOf<PkiRow, 'cert'> | FieldOf<PkiRow, 'key'> | FieldOf<PkiRow, 'pub'>;

/** Absolute path of every file of the PKI, one field per file of the table, plus the directory. */
export type PkiPaths = { dir: string } & { [Field in PkiFileField]: string };

/** The files of one row, in the order of the table: certificate before key, key before public key. */
export function filesOf(profile: PkiRow): readonly { field: PkiFileField; file: string }[] {
  return profile.kind === 'keyPair' ? [profile.key, profile.pub] : [profile.cert, profile.key];
}

export function pkiPaths(dir: string): PkiPaths {
  const paths = { dir } as PkiPaths;
  for (const profile of PKI_PROFILES) {
    for (const { field, file } of filesOf(profile)) paths[field] = join(dir, file);
  }
  return paths;
}
