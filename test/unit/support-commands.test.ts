import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { completionScript, completionTree, parseCompletionShell } from '../../cli/completion.js';
import { formatVersionReport, versionReport } from '../../cli/commands/support.js';
import { buildProgram } from '../../cli/program.js';
import { LABELS } from '../../shared/contract.js';
import { errorChain, VindError } from '../../shared/errors.js';
import { FakeRuntime } from '../support/fake-runtime.js';

describe('completion', () => {
  const program = buildProgram();

  it('walks the real command tree: commands, subcommands and options', () => {
    const tree = completionTree(program);
    const names = tree.subcommands.map((c) => c.name);
    expect(names).toEqual(
      expect.arrayContaining(['create', 'sleep', 'wake', 'node', 'export', 'completion']),
    );
    const sleep = tree.subcommands.find((c) => c.name === 'sleep')!;
    expect(sleep.options).toContainEqual(expect.objectContaining({ flags: ['--mode'], takesValue: true }));
    const node = tree.subcommands.find((c) => c.name === 'node')!;
    expect(node.subcommands.map((c) => c.path)).toContain('vind node add');
    expect(tree.options.flatMap((o) => o.flags)).toEqual(expect.arrayContaining(['--verbose', '-v']));
  });

  it('writes a bash script that bash accepts and that holds commands and options', () => {
    const script = completionScript(program, 'bash');
    execFileSync('bash', ['-n'], { input: script });
    for (const word of ['sleep', 'wake', 'node', '--mode', 'export', 'logs', '--output']) {
      expect(script).toContain(word);
    }
    expect(script).toContain('complete -o default -F _vind vind');
  });

  it('completes in bash as a user would see it', () => {
    const script = completionScript(program, 'bash');
    const complete = (line: string) => {
      const words = line.split(' ');
      const run =
        `${script}\nCOMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')}); ` +
        `COMP_CWORD=${words.length - 1}; _vind; printf '%s\\n' "\${COMPREPLY[@]}"`;
      return execFileSync('bash', ['-c', run], { encoding: 'utf8' }).split('\n').filter(Boolean);
    };
    expect(complete('vind sl')).toEqual(['sleep']);
    expect(complete('vind sleep --m')).toEqual(['--mode']);
    expect(complete('vind node ')).toEqual(expect.arrayContaining(['add', 'list', 'remove']));
    expect(complete('vind export logs --o')).toEqual(['--output']);
    // After an option that takes a value: nothing from vind (bash falls back to files).
    expect(complete('vind create --config ')).toEqual([]);
  });

  it('writes zsh and fish scripts from the same tree', () => {
    const zsh = completionScript(program, 'zsh');
    expect(zsh).toMatch(/^#compdef vind\n/);
    expect(zsh).toContain("'--mode:pause, stop, checkpoint'");
    expect(zsh).toContain("'vind node add'");
    const fish = completionScript(program, 'fish');
    expect(fish).toContain("complete -c vind -n 'test (__vind_path) = \\'vind sleep\\'' -l mode -r -F");
    expect(fish).toContain("-a wake -d 'bring sleeping clusters back as they were'");
  });

  it('refuses an unknown shell in one line', () => {
    expect(() => parseCompletionShell('powershell')).toThrow(
      new VindError('unknown shell "powershell": use bash, zsh, fish'),
    );
  });
});

describe('version', () => {
  it('reports the node image and its labels when the engine answers', async () => {
    const fake = new FakeRuntime();
    fake.images.set('vind/node:v1.36.3', {
      id: 'sha256:abc',
      size: 1,
      labels: { [LABELS.kubernetesVersion]: 'v1.36.3', [LABELS.inputsHash]: 'f'.repeat(64) },
    });
    const report = await versionReport(() => fake);
    expect(report).toMatchObject({
      vind: '0.1.0',
      engine: { reachable: true, endpoint: 'fake://engine' },
      nodeImage: { reference: 'vind/node:v1.36.3', present: true, kubernetesVersion: 'v1.36.3' },
    });
    expect(formatVersionReport(report)).toContain(
      'node image vind/node:v1.36.3: present (Kubernetes v1.36.3, inputs ffffffffffff)',
    );
  });

  it('still prints the CLI version when no engine can be asked', async () => {
    const fake = new FakeRuntime();
    fake.failWhen = (method) => (method === 'ping' ? new VindError('Docker is not reachable') : undefined);
    const report = await versionReport(() => fake);
    expect(report.engine).toEqual({
      reachable: false,
      endpoint: 'fake://engine',
      error: 'Docker is not reachable',
    });
    expect(report.nodeImage.present).toBeUndefined();
    const text = formatVersionReport(report);
    expect(text).toMatch(/^vind 0\.1\.0\n/);
    expect(text).toContain('the engine could not be asked: Docker is not reachable');
    // No engine found at all: the same.
    const none = await versionReport(() => {
      throw new VindError('no Docker engine found');
    });
    expect(none.engine).toEqual({ reachable: false, error: 'no Docker engine found' });
  });
});

describe('errorChain', () => {
  it('prints every cause with its stack, and values that are not errors', () => {
    const root = new Error('connect ECONNREFUSED');
    const middle = new Error('GET /version failed', { cause: root });
    const top = new VindError('the API server does not answer');
    (top as { cause?: unknown }).cause = middle;
    const text = errorChain(top);
    expect(text).toMatch(/^error: VindError: the API server does not answer\n {4}at /);
    expect(text).toContain('caused by: Error: GET /version failed\n    at ');
    expect(text).toContain('caused by: Error: connect ECONNREFUSED');
    expect(errorChain('plain')).toBe('error: plain\n');
    const loop = new Error('loop');
    (loop as { cause?: unknown }).cause = loop;
    expect(errorChain(loop).match(/loop/g)).toHaveLength(1);
  });
});
