import { describe, expect, it } from 'vitest';
import { PKI_PROFILES, filesOf, pkiPaths } from '../../node-agent/pki-profiles.js';

describe('PKI_PROFILES', () => {
  it('gives every file of every row a path in PkiPaths, and nothing else', () => {
    const paths = pkiPaths('/pki');
    const files = PKI_PROFILES.flatMap((profile) => filesOf(profile));
    expect(Object.keys(paths).sort()).toEqual(['dir', ...files.map(({ field }) => field)].sort());
    for (const { field, file } of files) expect(paths[field], field).toBe(`/pki/${file}`);
    expect(new Set(files.map(({ file }) => file)).size).toBe(files.length);
  });

  it('names private keys *Key and *.key, certificates *Cert and *.crt', () => {
    for (const profile of PKI_PROFILES) {
      expect(profile.key.field).toMatch(/Key$/);
      expect(profile.key.file).toMatch(/\.key$/);
      if (profile.kind === 'keyPair') continue;
      expect(profile.cert.field).toMatch(/Cert$/);
      expect(profile.cert.file).toMatch(/\.crt$/);
    }
  });

  it('lists the CA of every leaf before the leaf', () => {
    const seenCas = new Set<string>();
    for (const profile of PKI_PROFILES) {
      if (profile.kind === 'ca') seenCas.add(profile.cert.field);
      if (profile.kind === 'leaf') expect(seenCas, profile.cert.field).toContain(profile.issuer);
    }
  });
});
