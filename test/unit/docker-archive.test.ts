import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import tar from 'tar-stream';
import { buildDockerArchive, parentDirectories } from '../../images/docker-archive.js';

async function readTar(
  archive: Buffer,
): Promise<Map<string, { content: Buffer; mode?: number; type?: string }>> {
  const extract = tar.extract();
  const entries = new Map<string, { content: Buffer; mode?: number; type?: string }>();
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, stream, next) => {
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => chunks.push(c as Buffer));
      stream.on('end', () => {
        entries.set(header.name, {
          content: Buffer.concat(chunks),
          mode: header.mode,
          type: header.type ?? undefined,
        });
        next();
      });
      stream.resume();
    });
    extract.on('finish', resolve);
    extract.on('error', reject);
  });
  extract.end(archive);
  await done;
  return entries;
}

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

describe('parentDirectories', () => {
  it('lists each parent once, outermost first', () => {
    expect(parentDirectories(['a/b/c', 'a/d', 'e'])).toEqual(['a', 'a/b']);
  });
});

describe('buildDockerArchive', () => {
  const spec = {
    reference: 'vind.dev/pause:3.10',
    files: [
      { path: 'bin/pause', content: Buffer.from('#!binary'), mode: 0o755 },
      { path: 'bin/sh', content: Buffer.alloc(0), mode: 0o777, linkTarget: 'pause' },
    ],
    entrypoint: ['/bin/pause'],
    user: '65535:65535',
  };

  it('writes the docker-archive layout with digests that match the content', async () => {
    const built = await buildDockerArchive(spec);
    const entries = await readTar(built.tar);
    const manifest = JSON.parse(entries.get('manifest.json')!.content.toString()) as {
      Config: string;
      RepoTags: string[];
      Layers: string[];
    }[];
    expect(manifest).toHaveLength(1);
    expect(manifest[0]!.RepoTags).toEqual(['vind.dev/pause:3.10']);

    const configBytes = entries.get(manifest[0]!.Config)!.content;
    expect(`sha256:${sha256(configBytes)}`).toBe(built.imageId);
    const layer = entries.get(manifest[0]!.Layers[0]!)!.content;
    const config = JSON.parse(configBytes.toString()) as {
      rootfs: { diff_ids: string[] };
      config: { Entrypoint: string[]; User: string };
      os: string;
    };
    expect(config.rootfs.diff_ids).toEqual([`sha256:${sha256(layer)}`]);
    expect(config.config.Entrypoint).toEqual(['/bin/pause']);
    expect(config.config.User).toBe('65535:65535');
    expect(config.os).toBe('linux');

    const files = await readTar(layer);
    expect(files.get('bin/sh')?.type).toBe('symlink');
    expect(files.get('bin/')?.type).toBe('directory');
    expect(files.get('bin/pause')?.content.toString()).toBe('#!binary');
    expect(files.get('bin/pause')?.mode).toBe(0o755);
  });

  it('is reproducible: the same inputs give the same image id', async () => {
    const [a, b] = await Promise.all([buildDockerArchive(spec), buildDockerArchive(spec)]);
    expect(a.imageId).toBe(b.imageId);
    expect(a.tar.equals(b.tar)).toBe(true);
  });

  it('gives another id when a file changes', async () => {
    const other = await buildDockerArchive({
      ...spec,
      files: [{ path: 'bin/pause', content: Buffer.from('other'), mode: 0o755 }],
    });
    expect(other.imageId).not.toBe((await buildDockerArchive(spec)).imageId);
  });
});
