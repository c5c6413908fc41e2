// The embedded datastore's seed: which keys it keeps, that none of them is encrypted at rest, and how
// a first start takes it.

import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { encryptionConfiguration } from '../../node-agent/encryption.js';
import { keptInSeed, SEEDED_PREFIXES, startFromSeed } from '../../node-agent/seeded-datastore.js';

describe('what the seed keeps', () => {
  it.each([
    '/registry/clusterroles/system:node-bootstrapper',
    '/registry/clusterroles/admin',
    '/registry/clusterrolebindings/system:kube-scheduler',
    '/registry/roles/kube-system/extension-apiserver-authentication-reader',
    '/registry/rolebindings/kube-public/system:controller:bootstrap-signer',
    '/registry/priorityclasses/system-node-critical',
    '/registry/flowschemas/exempt',
    '/registry/prioritylevelconfigurations/workload-low',
    '/registry/apiregistration.k8s.io/apiservices/v1.apps',
  ])('keeps the bootstrap policy: %s', (key) => {
    expect(keptInSeed(key)).toBe(true);
  });

  it.each([
    // The service subnet's.
    '/registry/services/specs/default/kubernetes',
    '/registry/services/endpoints/default/kubernetes',
    '/registry/endpointslices/default/kubernetes',
    '/registry/servicecidrs/kubernetes',
    '/registry/ipaddresses/10.96.0.1',
    '/registry/ranges/serviceips',
    '/registry/ranges/servicenodeports',
    // The throw-away CA's, and the build's moment.
    '/registry/configmaps/kube-system/extension-apiserver-authentication',
    '/registry/leases/kube-system/apiserver-abcdefghijklmnopqrstuvwxyz',
    '/registry/events/default/a.1',
    // Each cluster's own: kube-system's UID names the cluster.
    '/registry/namespaces/kube-system',
    '/registry/namespaces/default',
    // Never written by a first start, and never kept if it were.
    '/registry/secrets/kube-system/a',
    // Only whole keys under a kept prefix: not the prefix itself, not a longer resource name.
    '/registry/clusterroles/',
    '/registry/clusterrolesx/a',
    '/registry/apiregistration.k8s.io/other/a',
    'compact_rev_key',
  ])('leaves out the rest: %s', (key) => {
    expect(keptInSeed(key)).toBe(false);
  });

  it('keeps nothing the API server encrypts at rest', () => {
    const config = parse(encryptionConfiguration(Buffer.alloc(32).toString('base64'))) as {
      resources: { resources: string[] }[];
    };
    const encrypted = config.resources.flatMap((r) => r.resources);
    expect(encrypted).toContain('secrets');
    // `/registry/<resource>/` is a core or rbac-like resource, `/registry/<group>/<resource>/` is
    // `<resource>.<group>` in the encryption configuration.
    const seeded = SEEDED_PREFIXES.map((prefix) => {
      const [resource, group] = prefix.split('/').slice(2, -1).reverse();
      return group ? `${resource}.${group}` : resource!;
    });
    expect(seeded).toContain('apiservices.apiregistration.k8s.io');
    for (const resource of seeded) expect(encrypted).not.toContain(resource);
    expect(encrypted).not.toContain('*.*');
  });
});

describe('a first start from the seed', () => {
  let scratch: string;
  let seed: string;
  let file: string;

  beforeEach(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'vind-seed-'));
    seed = join(scratch, 'seed.db');
    file = join(scratch, 'state.db');
  });

  afterEach(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  it('copies the seed where no datastore is yet', async () => {
    await writeFile(seed, 'seeded');
    expect(await startFromSeed(file, seed)).toBe(true);
    expect(await readFile(file, 'utf8')).toBe('seeded');
  });

  it('never replaces a datastore that exists (a restart)', async () => {
    await writeFile(seed, 'seeded');
    await writeFile(file, 'the cluster');
    expect(await startFromSeed(file, seed)).toBe(false);
    expect(await readFile(file, 'utf8')).toBe('the cluster');
  });

  it('starts empty with an image that has no seed', async () => {
    expect(await startFromSeed(file, seed)).toBe(false);
    await expect(readFile(file)).rejects.toThrow(/ENOENT/);
  });
});
