// A control plane claims its space in an external datastore before the API server reads it. The space
// is a key prefix per cluster name (contract: datastoreSpace), so clusters can share one database; a
// cluster made anew under an old name would otherwise start on the objects, nodes and Secrets of the
// one deleted before it (Secrets it cannot even read: their key went with the old control plane, and
// the API server does not get ready while it cannot). A marker key in the space names the cluster that
// owns it. A stranger's space ends the start with one line, unless the user asked to take it over:
// then its unreadable Secrets are dropped and everything else is kept.

import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../shared/atomic-write.js';
import { PermanentError, poll } from '../shared/poll.js';
import type { EtcdClient } from './etcd-client.js';
import { log } from './log.js';

/** This cluster's id, made on the first start and kept on the control plane's volume. */
export async function clusterId(path: string): Promise<string> {
  const saved = (await readFile(path, 'utf8').catch(() => '')).trim();
  if (saved) return saved;
  const id = randomUUID();
  await writeFileAtomic(path, `${id}\n`, { mode: 0o600 });
  return id;
}

export interface Marker {
  id: string;
  name: string;
  created: string;
}

export interface Claim {
  id: string;
  name: string;
  /** The key prefix, e.g. /vind/dev */
  space: string;
  /** Where, for messages: the datastore URL without its password. */
  where: string;
  reuse: boolean;
}

export type ClaimDecision = 'create' | 'keep' | 'take-over';

/** What to do with a space, from its marker and whether it holds anything: pure, for the tests. */
export function claimDecision(marker: Marker | undefined, holdsData: boolean, claim: Claim): ClaimDecision {
  if (marker?.id === claim.id) return 'keep';
  if (!marker && !holdsData) return 'create';
  if (claim.reuse) return 'take-over';
  const owner = marker
    ? `a cluster "${marker.name}" made ${marker.created}`
    : 'objects of an unknown cluster';
  throw new PermanentError(
    `the datastore already holds ${owner} under ${claim.space}/ in ${claim.where}: remove them there, ` +
      'or take them over with `vind create --reuse-datastore` (their Secrets cannot be read and are dropped)',
  );
}

export async function claimDatastoreSpace(client: EtcdClient, claim: Claim): Promise<ClaimDecision> {
  const markerKey = `${claim.space}/vind-cluster`;
  // The datastore may take a moment to answer once kine is up.
  const [found] = await poll('the datastore to answer', () => client.range(markerKey), { timeoutMs: 60_000 });
  let marker: Marker | undefined;
  try {
    marker = found ? (JSON.parse(found.value.toString()) as Marker) : undefined;
  } catch {
    marker = { id: '', name: 'unknown', created: 'at an unknown time' };
  }
  const holdsData =
    !marker && (await client.range(`${claim.space}/`, { prefix: true, keysOnly: true, limit: 1 })).length > 0;
  const decision = claimDecision(marker, holdsData, claim);
  if (decision === 'keep') return decision;
  if (decision === 'take-over') {
    const secrets = await client.range(`${claim.space}/registry/secrets/`, { prefix: true, keysOnly: true });
    for (const secret of secrets) await client.delete(secret);
    log(
      `took over the datastore space ${claim.space}/; dropped ${secrets.length} Secrets encrypted with a key that is gone`,
    );
  }
  const created: Marker = { id: claim.id, name: claim.name, created: new Date().toISOString() };
  await client.put(markerKey, JSON.stringify(created));
  return decision;
}
