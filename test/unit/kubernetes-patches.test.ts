import { chmod, cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  applyPatch,
  KUBERNETES_PATCHES,
  type SourcePatch,
  writePatchedModules,
} from '../../images/kubernetes-patches.js';

const patch: SourcePatch = {
  name: 'first-look-at-once',
  module: 'example.com/m',
  file: 'pkg/hook.go',
  find: 'wait.Poll(1*time.Second',
  replace: 'wait.PollImmediate(1*time.Second',
};

describe('applyPatch', () => {
  it('replaces the one occurrence and keeps the rest of the file', () => {
    const result = applyPatch('a\nerr := wait.Poll(1*time.Second, 30*time.Second, f)\nb\n', patch);
    expect(result).toEqual({ text: 'a\nerr := wait.PollImmediate(1*time.Second, 30*time.Second, f)\nb\n' });
  });

  it('leaves a file out that no longer holds the text', () => {
    expect(applyPatch('err := wait.PollUntilContextTimeout(ctx, 1*time.Second, true, f)', patch)).toEqual({
      skipped: 'pkg/hook.go no longer holds the text it changes',
    });
  });

  it('leaves a file out that holds the text twice, since which one is meant is unknown', () => {
    const twice = 'wait.Poll(1*time.Second, a)\nwait.Poll(1*time.Second, b)\n';
    expect(applyPatch(twice, patch)).toHaveProperty('skipped');
  });

  it('every patch only shortens a wait: the replacement differs from the text only in its timing', () => {
    for (const p of KUBERNETES_PATCHES) {
      const strip = (s: string): string =>
        s.replace(/PollImmediate|Poll|(\d+\s*\*\s*)?time\.(Second|Millisecond)/g, '');
      expect(strip(p.replace), p.name).toBe(strip(p.find));
      expect(p.replace, p.name).not.toBe(p.find);
    }
  });
});

describe('writePatchedModules', () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('copies each patched module, chains two patches of one file and names what it left out', async () => {
    dir = await mkdtemp(join(tmpdir(), 'vind-patches-'));
    const moduleRoot = join(dir, 'cache', 'example.com', 'm@v1.0.0');
    const file = join(moduleRoot, 'pkg/hook.go');
    const untouched = join(moduleRoot, 'pkg/other.go');
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, 'wait.Poll(1*time.Second, a)\nconst Period = 1 * time.Second\n');
    await writeFile(untouched, 'package pkg\n');
    // The module cache is read-only.
    await chmod(file, 0o444);
    await chmod(dirname(file), 0o555);
    const second: SourcePatch = {
      ...patch,
      name: 'shorter-period',
      find: 'const Period = 1 * time.Second',
      replace: 'const Period = 100 * time.Millisecond',
    };
    const gone: SourcePatch = { ...patch, name: 'gone', module: 'example.com/n', find: 'not there' };
    const asked: string[] = [];

    const result = await writePatchedModules(join(dir, 'out'), [patch, second, gone], {
      dir: async (module) => {
        asked.push(module);
        return moduleRoot;
      },
      copy: async (from, to) => {
        await cp(from, to, { recursive: true });
        await chmod(join(to, 'pkg'), 0o755);
      },
    });

    expect(asked).toEqual(['example.com/m', 'example.com/n']);
    expect(result.applied).toEqual(['first-look-at-once', 'shorter-period']);
    expect(result.skipped).toEqual(['gone (pkg/hook.go no longer holds the text it changes)']);
    // Only a module with an applied patch is replaced.
    const copy = join(dir, 'out', 'example.com/m');
    expect(result.replacements).toEqual({ 'example.com/m': copy });
    expect(await readFile(join(copy, 'pkg/hook.go'), 'utf8')).toBe(
      'wait.PollImmediate(1*time.Second, a)\nconst Period = 100 * time.Millisecond\n',
    );
    expect(await readFile(join(copy, 'pkg/other.go'), 'utf8')).toBe('package pkg\n');
    // Upstream's file is never touched.
    expect(await readFile(file, 'utf8')).toBe(
      'wait.Poll(1*time.Second, a)\nconst Period = 1 * time.Second\n',
    );
    await chmod(dirname(file), 0o755);
  });
});
