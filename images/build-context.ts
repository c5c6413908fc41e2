// The build context of the node image as a tar stream: the files of a folder, modes kept, owners
// reset to root.

import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import tar from 'tar-stream';

export async function packDirectory(directory: string, files: string[]): Promise<Readable> {
  const pack = tar.pack();
  (async () => {
    for (const file of files) {
      const info = await stat(join(directory, file));
      const content = await readFile(join(directory, file));
      await new Promise<void>((resolve, reject) =>
        pack.entry(
          { name: file, mode: info.mode & 0o7777, uid: 0, gid: 0, size: content.length },
          content,
          (err) => (err ? reject(err) : resolve()),
        ),
      );
    }
    pack.finalize();
  })().catch((error: unknown) => pack.destroy(error as Error));
  return pack as unknown as Readable;
}
