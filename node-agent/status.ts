// The node's state for the CLI (STATUS_FILE of the contract). The CLI reads it with `docker exec`
// while it waits; a failed phase carries the one line to show the user.

import { mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import { writeFileAtomic } from '../shared/atomic-write.js';
import { type NodePhase, type NodeStatus, STATUS_FILE } from '../shared/contract.js';
import { log } from './log.js';

export async function setStatus(phase: NodePhase, message: string): Promise<void> {
  const status: NodeStatus = { phase, message, at: new Date().toISOString() };
  await mkdir(dirname(STATUS_FILE), { recursive: true });
  await writeFileAtomic(STATUS_FILE, JSON.stringify(status));
  log(`${phase}: ${message}`);
}
