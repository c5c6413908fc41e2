// The one way files that others read are written: whole, under a temporary name in the same folder,
// then renamed over the old one, so a reader (the CLI through `docker exec`, kubectl, a restarted
// agent) never sees half a file.

import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export async function writeFileAtomic(
  path: string,
  content: string | Uint8Array,
  options: { mode?: number; createDirectory?: boolean; sync?: boolean } = {},
): Promise<void> {
  if (options.createDirectory) await mkdir(dirname(path), { recursive: true });
  // Hidden, in the same folder (a rename never crosses file systems), and never an existing file.
  const temp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    const handle = await open(temp, 'wx', options.mode ?? 0o644);
    try {
      await handle.writeFile(content);
      // For files a user keeps (a kubeconfig): on disk before the old one is replaced.
      if (options.sync) await handle.sync();
    } finally {
      await handle.close();
    }
    // The umask filters the mode given at creation; an exact mode is part of some contracts.
    if (options.mode !== undefined) await chmod(temp, options.mode);
    await rename(temp, path);
  } catch (error) {
    await unlink(temp).catch(() => undefined);
    throw error;
  }
}
