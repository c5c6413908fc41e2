// Secrets are encrypted at rest, whatever the datastore: the API server's encryption configuration
// with a secretbox key made on the first start and kept with the PKI on the control plane's volume.
// Identity comes last so that Secrets written before encryption was on can still be read.

import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { stringify } from 'yaml';
import { writeFileAtomic } from '../shared/atomic-write.js';

export function encryptionConfiguration(keyBase64: string): string {
  return stringify({
    apiVersion: 'apiserver.config.k8s.io/v1',
    kind: 'EncryptionConfiguration',
    resources: [
      {
        resources: ['secrets'],
        providers: [{ secretbox: { keys: [{ name: 'vind-1', secret: keyBase64 }] } }, { identity: {} }],
      },
    ],
  });
}

/** Writes the configuration once; later starts keep the key, or the Secrets would be lost. */
export async function ensureEncryptionConfiguration(path: string): Promise<void> {
  if ((await readFile(path, 'utf8').catch(() => '')).includes('secretbox')) return;
  await writeFileAtomic(path, encryptionConfiguration(randomBytes(32).toString('base64')), { mode: 0o600 });
}
