// The node's state for the CLI: /run/vind/status holds {phase, message, at}. The CLI reads it with
// `docker exec` while it waits; a failed phase carries the one line to show the user.

import { mkdir, rename, writeFile } from 'node:fs/promises';
import { log } from './log.js';

export const STATUS_FILE = '/run/vind/status';

export type Phase = 'starting' | 'ready' | 'failed';

export interface NodeStatus {
  phase: Phase;
  message: string;
  at: string;
}

export async function setStatus(phase: Phase, message: string): Promise<void> {
  const status: NodeStatus = { phase, message, at: new Date().toISOString() };
  await mkdir('/run/vind', { recursive: true });
  // Written whole under another name and renamed, so a reader never sees half a file.
  await writeFile(`${STATUS_FILE}.tmp`, JSON.stringify(status));
  await rename(`${STATUS_FILE}.tmp`, STATUS_FILE);
  log(`${phase}: ${message}`);
}
