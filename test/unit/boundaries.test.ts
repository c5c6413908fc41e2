// The dependency rules of the layout hold: shown by breaking them on purpose.

import { join } from 'node:path';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';
import { AgentBundleError, bundleNodeAgent, packageOf } from '../../images/agent-bundle.js';
import { PROJECT_ROOT } from '../../images/project-root.js';

async function restrictedImports(filePath: string, source: string): Promise<string[]> {
  const eslint = new ESLint({ cwd: PROJECT_ROOT });
  const [result] = await eslint.lintText(source, { filePath: join(PROJECT_ROOT, filePath) });
  return (result?.messages ?? []).filter((m) => m.ruleId === 'no-restricted-imports').map((m) => m.message);
}

describe('lint rules on imports', () => {
  it('refuse node-agent/ importing cli/', async () => {
    const messages = await restrictedImports(
      'node-agent/example.ts',
      "import { dockerRuntime } from '../cli/runtime/docker-runtime.js';\nexport const r = dockerRuntime;\n",
    );
    expect(messages.join()).toMatch(/import only shared\//);
  });

  it('refuse vpn/ importing images/, and host-only packages in node-agent/', async () => {
    expect(
      await restrictedImports(
        'vpn/example.ts',
        "import { GO_TOOLS } from '../images/recipe.js';\nexport const t = GO_TOOLS;\n",
      ),
    ).toHaveLength(1);
    expect(
      await restrictedImports(
        'node-agent/x/example.ts',
        "import Docker from 'dockerode';\nexport const d = Docker;\n",
      ),
    ).toHaveLength(1);
    expect(
      await restrictedImports('node-agent/example.ts', "import { z } from 'zod';\nexport const s = z;\n"),
    ).toHaveLength(1);
  });

  it('let node-agent/ import shared/ and its own modules', async () => {
    const source =
      "import { LABELS } from '../shared/contract.js';\nimport { log } from './log.js';\nexport const x = [LABELS, log];\n";
    expect(await restrictedImports('node-agent/example.ts', source)).toEqual([]);
  });

  it('keep shared/ to Node built-ins, yaml and itself', async () => {
    expect(
      await restrictedImports(
        'shared/example.ts',
        "import { execa } from 'execa';\nexport const e = execa;\n",
      ),
    ).toHaveLength(1);
    expect(
      await restrictedImports(
        'shared/example.ts',
        "import { x } from '../cli/paths.js';\nexport const e = x;\n",
      ),
    ).toHaveLength(1);
    const fine =
      "import { readFile } from 'node:fs/promises';\nimport { parse } from 'yaml';\nimport { LABELS } from './contract.js';\nexport const f = [readFile, parse, LABELS];\n";
    expect(await restrictedImports('shared/example.ts', fine)).toEqual([]);
  });

  it('refuse images/ importing cli/, and benchmarks importing vitest', async () => {
    expect(
      await restrictedImports(
        'images/example.ts',
        "import { cacheDir } from '../cli/paths.js';\nexport const c = cacheDir;\n",
      ),
    ).toHaveLength(1);
    expect(
      await restrictedImports(
        'bench/example.ts',
        "import { expect } from 'vitest';\nexport const e = expect;\n",
      ),
    ).toHaveLength(1);
  });
});

describe('the node agent bundle guard', () => {
  it('refuses an agent that pulls in the Docker client, naming the import chain', async () => {
    const entry = join(PROJECT_ROOT, 'test', 'fixtures', 'agent-bundle', 'reaches-the-cli.ts');
    await expect(bundleNodeAgent(entry)).rejects.toThrow(AgentBundleError);
    await expect(bundleNodeAgent(entry)).rejects.toThrow(
      /dockerode \(.*reaches-the-cli\.ts -> cli\/runtime\/docker-runtime\.ts/,
    );
  });

  it('passes the real agent, which holds no host-only package', async () => {
    expect((await bundleNodeAgent()).length).toBeGreaterThan(100_000);
  });

  it('reads package names out of bundle input paths', () => {
    expect(packageOf('node_modules/dockerode/lib/docker.js')).toBe('dockerode');
    expect(packageOf('node_modules/@peculiar/x509/build/x509.es.js')).toBe('@peculiar/x509');
    expect(packageOf('node-agent/main.ts')).toBeUndefined();
  });
});
