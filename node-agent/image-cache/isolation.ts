// How the image cache keeps the Docker socket away from the process that parses network input: the
// socket and the Docker config sit in a folder only root can enter, the registry runs as an
// unprivileged user that owns the blob folder, and reaches Docker only through the broker's socket.

import { chmod, chown, lchown, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';

/** nobody:nogroup on Debian: the registry's user. */
export const REGISTRY_USER = { uid: 65534, gid: 65534 } as const;

/** The broker's socket; its folder is open to root and the registry's group only. */
export const BROKER_SOCKET = '/run/vind-cache/engine.sock';

/**
 * Closes a folder to everyone but root (0700, owned by root). What is bind-mounted inside it cannot be
 * reached by another user whatever its own mode: the host's socket may well be 0666.
 */
export async function closeToOthers(dir: string): Promise<void> {
  const info = await stat(dir);
  if (info.uid !== 0 || info.gid !== 0) await chown(dir, 0, 0);
  await chmod(dir, 0o700);
}

/**
 * Gives a folder and everything in it to a user, except the named top-level entries (the tokens and
 * the limit stay root's: the registry reads them, and has no business writing them).
 */
export async function giveTo(
  root: string,
  user: { uid: number; gid: number },
  except: readonly string[] = [],
): Promise<void> {
  await lchown(root, user.uid, user.gid);
  const walk = async (dir: string, top: boolean): Promise<void> => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      if (top && except.includes(entry.name)) continue;
      const path = join(dir, entry.name);
      await lchown(path, user.uid, user.gid);
      if (entry.isDirectory()) await walk(path, false);
    }
  };
  await walk(root, true);
}
