// The project's root folder, from where this file sits (images/ in the sources, dist/images/ built).

import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const PROJECT_ROOT = here.endsWith(join('dist', 'images')) ? join(here, '..', '..') : join(here, '..');
