// How many bytes of blobs the cache keeps: the limit file in the cache folder (so the CLI can change
// it in a running cache), else the container's environment, else the default. A value that does not
// read as a size is logged and passed over.

import { readFile } from 'node:fs/promises';
import { parseByteSize } from '../../shared/byte-size.js';
import { IMAGE_CACHE } from '../../shared/contract.js';
import { log } from '../log.js';

export async function readCacheLimit(
  limitFile: string,
  env: Record<string, string | undefined> = process.env,
): Promise<number> {
  const fromFile = await readFile(limitFile, 'utf8').catch(() => undefined);
  const candidates: [string, string | undefined][] = [
    [limitFile, fromFile],
    [IMAGE_CACHE.limitEnv, env[IMAGE_CACHE.limitEnv]],
  ];
  for (const [source, text] of candidates) {
    if (text === undefined || text.trim() === '') continue;
    try {
      return parseByteSize(text);
    } catch (error) {
      log(`ignoring the cache limit in ${source}: ${(error as Error).message}`);
    }
  }
  return IMAGE_CACHE.defaultLimit;
}
