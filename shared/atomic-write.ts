// The one way files that others read are written: whole, under a temporary name in the same folder,
// then renamed over the old one, so a reader (the CLI through `docker exec`, kubectl, a restarted
// agent) never sees half a file.

import { randomBytes } from 'node:crypto';
import { chmod, mkdir, rename, unlink, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

export async function writeFileAtomic(
  path: string,
  content: string | Uint8Array,
  options: { mode?: number; createDirectory?: boolean } = {},
): Promise<void> {
  if (options.createDirectory) await mkdir(dirname(path), { recursive: true });
  const temp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await writeFile(temp, content, { mode: options.mode ?? 0o644 });
    // The umask filters the mode given at creation; an exact mode is part of some contracts.
    if (options.mode !== undefined) await chmod(temp, options.mode);
    await rename(temp, path);
  } catch (error) {
    await unlink(temp).catch(() => undefined);
    throw error;
  }
}
