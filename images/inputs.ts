// The input hash of a node image: when it matches the label on an existing image, the build is skipped.

import { createHash } from 'node:crypto';

/**
 * Hashes named parts in a stable order. A part's name is hashed with its content so that moving
 * text from one part to another changes the hash.
 */
export function inputsHash(parts: Record<string, string | Buffer>): string {
  const hash = createHash('sha256');
  for (const name of Object.keys(parts).sort()) {
    const content = parts[name]!;
    const bytes = typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
    hash.update(`${name}\0${bytes.length}\0`);
    hash.update(bytes);
  }
  return hash.digest('hex');
}

/** A short form for image tags and folder names. */
export function shortHash(hash: string): string {
  return hash.slice(0, 12);
}
