// The clusters' tokens: one file per cluster in the tokens folder, named after the cluster, written
// and removed by the CLI. The registry reads them again when the folder changes (a token is added or
// removed by rename or unlink, which changes the folder's mtime), and compares in constant time.

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

/** One cluster's token: the file's name is the cluster's. */
export interface ClusterToken {
  cluster: string;
  token: Buffer;
}

export class TokenStore {
  private cached?: { mtimeMs: number; tokens: ClusterToken[] };

  constructor(readonly dir: string) {}

  /** The token of every cluster; none when the folder does not exist. */
  async tokens(): Promise<ClusterToken[]> {
    let mtimeMs: number;
    try {
      mtimeMs = (await stat(this.dir)).mtimeMs;
    } catch {
      this.cached = undefined;
      return [];
    }
    if (this.cached?.mtimeMs === mtimeMs) return this.cached.tokens;
    const readAt = Date.now();
    const tokens: ClusterToken[] = [];
    for (const name of await readdir(this.dir).catch(() => [] as string[])) {
      // The CLI writes name.tmp, then renames it.
      if (name.startsWith('.') || name.endsWith('.tmp')) continue;
      const text = (await readFile(join(this.dir, name), 'utf8').catch(() => '')).trim();
      if (TOKEN.test(text)) tokens.push({ cluster: name, token: Buffer.from(text) });
    }
    this.cached = readAt - mtimeMs > SETTLED_MS ? { mtimeMs, tokens } : undefined;
    return tokens;
  }

  /** The clusters whose token a request's header value is. */
  private async matches(header: string | string[] | undefined): Promise<string[]> {
    if (typeof header !== 'string' || !TOKEN.test(header)) return [];
    const given = Buffer.from(header);
    const clusters: string[] = [];
    // Every token is compared, whichever matches: the time taken says nothing about which one.
    for (const { cluster, token } of await this.tokens()) {
      if (timingSafeEqual(token, given)) clusters.push(cluster);
    }
    return clusters;
  }

  /** Whether a request's header value is one of the tokens. */
  async accepts(header: string | string[] | undefined): Promise<boolean> {
    return (await this.matches(header)).length > 0;
  }

  /**
   * The cluster a request's header value is the token of; undefined for no token, and for a token
   * that two clusters share, which says nothing about which of them asks.
   */
  async clusterOf(header: string | string[] | undefined): Promise<string | undefined> {
    const clusters = await this.matches(header);
    return clusters.length === 1 ? clusters[0] : undefined;
  }
}
