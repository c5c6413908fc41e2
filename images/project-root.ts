// The project's root folder: the nearest folder above this file's that holds the project's
// package.json. This file runs from images/ in the sources, dist/images/ compiled, and dist/cli/
// inside the bundled CLI.

import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function projectRoot(from: string): string {
  for (let dir = from; ; dir = dirname(dir)) {
    const manifest = join(dir, 'package.json');
    if (
      existsSync(manifest) &&
      (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'vind'
    ) {
      return dir;
    }
    if (dirname(dir) === dir) throw new Error(`vind's package.json is not in any folder above ${from}`);
  }
}

export const PROJECT_ROOT = projectRoot(dirname(fileURLToPath(import.meta.url)));
