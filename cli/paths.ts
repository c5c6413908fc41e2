// The only files vind keeps on the host: caches (build outputs, probes) and the kubeconfig.

import { homedir } from 'node:os';
import { join } from 'node:path';

export function cacheDir(): string {
  if (process.env.VIND_CACHE_DIR) return process.env.VIND_CACHE_DIR;
  const base = process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache');
  return join(base, 'vind');
}

export function logDir(): string {
  return join(cacheDir(), 'logs');
}
