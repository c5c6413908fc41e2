// Kubeconfig text for one cluster: what the control plane writes for its components and the admin,
// and what the CLI merges into the user's file. Only `yaml`, so the node agent can use it too.

import { Document, parse } from 'yaml';

export interface ClusterCredentials {
  /** `vind-<name>`; the cluster, user and context entries all carry it. */
  contextName: string;
  server: string;
  /** Base64-encoded PEM, as kubeconfig's *-data fields expect. */
  caData: string;
  clientCertData: string;
  clientKeyData: string;
}

export const KUBECONFIG_SECTIONS = ['clusters', 'users', 'contexts'] as const;
export type KubeconfigSection = (typeof KUBECONFIG_SECTIONS)[number];

// kubectl writes sequences flush with their key and never folds long lines; stay close to that.
export const KUBECONFIG_YAML_OPTIONS = { indentSeq: false, lineWidth: 0 } as const;

export function kubeconfigEntries(
  creds: ClusterCredentials,
): Record<KubeconfigSection, Record<string, unknown>> {
  const name = creds.contextName;
  return {
    clusters: { name, cluster: { server: creds.server, 'certificate-authority-data': creds.caData } },
    users: {
      name,
      user: { 'client-certificate-data': creds.clientCertData, 'client-key-data': creds.clientKeyData },
    },
    contexts: { name, context: { cluster: name, user: name } },
  };
}

export function renderKubeconfig(creds: ClusterCredentials): string {
  const entry = kubeconfigEntries(creds);
  const doc = new Document({
    apiVersion: 'v1',
    kind: 'Config',
    preferences: {},
    clusters: [entry.clusters],
    users: [entry.users],
    contexts: [entry.contexts],
    'current-context': creds.contextName,
  });
  return doc.toString(KUBECONFIG_YAML_OPTIONS);
}

interface SingleClusterKubeconfig {
  clusters?: { cluster?: { 'certificate-authority-data'?: string } }[];
  users?: { user?: { 'client-certificate-data'?: string; 'client-key-data'?: string } }[];
}

/** The credentials in a one-cluster kubeconfig with inline data, under a new name and server. */
export function credentialsFromKubeconfig(
  text: string,
  contextName: string,
  server: string,
): ClusterCredentials {
  const doc = parse(text) as SingleClusterKubeconfig;
  const caData = doc.clusters?.[0]?.cluster?.['certificate-authority-data'];
  const user = doc.users?.[0]?.user;
  if (!caData || !user?.['client-certificate-data'] || !user['client-key-data']) {
    throw new Error('the kubeconfig has no inline CA, client certificate and key');
  }
  return {
    contextName,
    server,
    caData,
    clientCertData: user['client-certificate-data'],
    clientKeyData: user['client-key-data'],
  };
}
