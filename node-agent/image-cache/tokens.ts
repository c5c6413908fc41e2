// The clusters' tokens: one file per cluster in the tokens folder, written and removed by the CLI.
// The registry reads them again when the folder changes (a token is added or removed by rename or
// unlink, which changes the folder's mtime), and compares in constant time.

import { timingSafeEqual } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';

const TOKEN = /^[0-9a-f]{64}$/;

/**
 * The clock that stamps files advances in steps of a few milliseconds: a folder read in the same
 * step as a change could change again under the same mtime. A read that close to the folder's mtime
 * is not kept.
 */
const SETTLED_MS = 1_000;

export class TokenStore {
  private cached?: { mtimeMs: number; tokens: Buffer[] };

  constructor(readonly dir: string) {}

  /** The tokens of every cluster; none when the folder does not exist. */
  async tokens(): Promise<Buffer[]> {
    let mtimeMs: number;
    try {
      mtimeMs = (await stat(this.dir)).mtimeMs;
    } catch {
      this.cached = undefined;
      return [];
    }
    if (this.cached?.mtimeMs === mtimeMs) return this.cached.tokens;
    const readAt = Date.now();
    const tokens: Buffer[] = [];
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      // The CLI writes name.tmp, then renames it.
      if (name.startsWith('.') || name.endsWith('.tmp')) continue;
      const text = (await readFile(join(this.dir, name), 'utf8').catch(() => '')).trim();
      if (TOKEN.test(text)) tokens.push(Buffer.from(text));
    }
    this.cached = readAt - mtimeMs > SETTLED_MS ? { mtimeMs, tokens } : undefined;
    return tokens;
  }

  /** Whether a request's header value is one of the tokens. */
  async accepts(header: string | string[] | undefined): Promise<boolean> {
    if (typeof header !== 'string' || !TOKEN.test(header)) return false;
    const given = Buffer.from(header);
    let found = false;
    // Every token is compared, whichever matches: the time taken says nothing about which one.
    for (const token of await this.tokens()) {
      if (timingSafeEqual(token, given)) found = true;
    }
    return found;
  }
}
