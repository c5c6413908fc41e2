// The embedded datastore's seed: what every new API server writes first into an empty datastore (the
// bootstrap policy) and nothing that belongs to one cluster. The image build makes it
// (datastore-seed.ts); a control plane's first start copies it into place before kine starts, so the
// API server's start-up hooks find their objects there instead of writing them one by one.

import { existsSync } from 'node:fs';
import { copyFile, rename } from 'node:fs/promises';
import { SEED } from '../shared/contract.js';
import { log } from './log.js';

/**
 * What the seed keeps, by key prefix: the same in every cluster of one image. Everything else goes:
 * the `kubernetes` Service, its endpoints, ServiceCIDR and address follow the service subnet; leases,
 * events and configmaps (extension-apiserver-authentication) carry the build's throw-away CA; and
 * namespaces are made anew by each cluster, since tools take kube-system's UID for the cluster's.
 * None of these resources is encrypted at rest (encryption.ts encrypts Secrets only).
 */
export const SEEDED_PREFIXES = [
  '/registry/clusterroles/',
  '/registry/clusterrolebindings/',
  '/registry/roles/',
  '/registry/rolebindings/',
  '/registry/priorityclasses/',
  '/registry/flowschemas/',
  '/registry/prioritylevelconfigurations/',
  '/registry/apiregistration.k8s.io/apiservices/',
] as const;

export function keptInSeed(key: string): boolean {
  return SEEDED_PREFIXES.some((prefix) => key.startsWith(prefix) && key.length > prefix.length);
}

/**
 * On a first start (no datastore file yet) copies the image's seed into place, when the image has one.
 * Copied beside and renamed, so a start cut short never leaves half a datastore that looks whole.
 */
export async function startFromSeed(file: string, seed: string = SEED.datastore): Promise<boolean> {
  if (existsSync(file) || !existsSync(seed)) return false;
  const partial = `${file}.seed`;
  await copyFile(seed, partial);
  await rename(partial, file);
  log(`datastore: starting from the image's seed (${seed})`);
  return true;
}
