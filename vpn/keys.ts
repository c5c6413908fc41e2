// WireGuard keys are x25519 key pairs (and optional preshared keys), written as base64 of the raw 32
// bytes. A private key never leaves the machine that made it; peers learn each other's public keys only.

import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';

// DER prefixes of the PKCS#8 and SPKI encodings of an X25519 key; the raw key follows.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

export interface WireGuardKeyPair {
  privateKey: string;
  publicKey: string;
}

function decodeKey(key: string, what: string): Buffer {
  const raw = Buffer.from(key, 'base64');
  if (raw.length !== 32 || raw.toString('base64') !== key) {
    throw new Error(`${what} is not a WireGuard key: expected 44 characters of base64 (32 bytes)`);
  }
  return raw;
}

export function generateKeyPair(): WireGuardKeyPair {
  const { privateKey } = generateKeyPairSync('x25519');
  const raw = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(PKCS8_PREFIX.length);
  const encoded = Buffer.from(raw).toString('base64');
  return { privateKey: encoded, publicKey: publicKeyOf(encoded) };
}

/** A preshared key, as `wg genpsk` makes it: 32 random bytes. It adds a symmetric secret to the handshake. */
export function generatePresharedKey(): string {
  return randomBytes(32).toString('base64');
}

/** The public key of a private key, as `wg pubkey` prints it. */
export function publicKeyOf(privateKey: string): string {
  const raw = decodeKey(privateKey, 'the private key');
  const key = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, raw]), format: 'der', type: 'pkcs8' });
  const spki = createPublicKey(key).export({ format: 'der', type: 'spki' });
  return Buffer.from(spki.subarray(SPKI_PREFIX.length)).toString('base64');
}

export function isValidKey(key: string): boolean {
  try {
    decodeKey(key, 'key');
    return true;
  } catch {
    return false;
  }
}
