import { describe, expect, it } from 'vitest';
import { generateKeyPair, generatePresharedKey, isValidKey, publicKeyOf } from '../../vpn/keys.js';

describe('WireGuard keys', () => {
  it('derives the public key of the RFC 7748 test vector', () => {
    // RFC 7748 section 6.1, Alice's key pair, as base64.
    const alicePrivate = Buffer.from(
      '77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a',
      'hex',
    );
    const alicePublic = Buffer.from(
      '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a',
      'hex',
    );
    expect(publicKeyOf(alicePrivate.toString('base64'))).toBe(alicePublic.toString('base64'));
  });

  it('generates distinct, well-formed pairs whose halves belong together', () => {
    const a = generateKeyPair();
    const b = generateKeyPair();
    expect(a.privateKey).not.toBe(b.privateKey);
    for (const pair of [a, b]) {
      expect(pair.privateKey).toMatch(/^[A-Za-z0-9+/]{43}=$/);
      expect(isValidKey(pair.publicKey)).toBe(true);
      expect(publicKeyOf(pair.privateKey)).toBe(pair.publicKey);
    }
  });

  it('rejects text that is not a 32-byte base64 key', () => {
    expect(isValidKey('short')).toBe(false);
    expect(() => publicKeyOf('not a key')).toThrow(/44 characters of base64/);
  });

  it('generates preshared keys of 32 random bytes', () => {
    const a = generatePresharedKey();
    expect(isValidKey(a)).toBe(true);
    expect(a).not.toBe(generatePresharedKey());
  });
});
