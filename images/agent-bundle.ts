// The node agent and the shared library it uses, bundled into one ES module for the Node.js of the
// node image. The bundle must hold only what runs in a node: a host-side library (the Docker client,
// the config schema, the command-line parser) in it means an import crossed the line between the
// agent and the CLI, and the build stops with the import chain that pulled it in.

import { join } from 'node:path';
import * as esbuild from 'esbuild';
import { PROJECT_ROOT } from './project-root.js';

/** Packages that belong to the host CLI only. */
export const HOST_ONLY_PACKAGES = ['dockerode', 'docker-modem', 'zod', 'commander', 'undici', 'esbuild'];

export class AgentBundleError extends Error {}

/** The package an input path of the bundle belongs to, if it comes from node_modules. */
export function packageOf(inputPath: string): string | undefined {
  const match = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(inputPath);
  return match?.[1];
}

/** The package a bare import specifier names: `dockerode`, `@peculiar/x509`, not `./x.js`. */
function packageOfSpecifier(specifier: string): string | undefined {
  if (specifier.startsWith('.') || specifier.startsWith('/') || specifier.startsWith('node:'))
    return undefined;
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
}

/** The chain of project files through which the entry point reached `file`. */
function importChain(metafile: esbuild.Metafile, file: string): string[] {
  const importers = new Map<string, string>();
  for (const [path, input] of Object.entries(metafile.inputs)) {
    for (const imported of input.imports)
      if (!importers.has(imported.path)) importers.set(imported.path, path);
  }
  const chain = [file];
  for (let at = importers.get(file); at && chain.length < 16; at = importers.get(at)) chain.unshift(at);
  return chain;
}

export async function bundleNodeAgent(
  entryPoint = join(PROJECT_ROOT, 'node-agent', 'main.ts'),
): Promise<string> {
  // Host-only packages are cut off where they are imported (left external) and noted with the
  // importing file, so the build finishes and the guard can name how each one was reached.
  const reached: { pkg: string; importer: string }[] = [];
  const guard: esbuild.Plugin = {
    name: 'host-only-packages',
    setup(build) {
      build.onResolve({ filter: /^[^./]/ }, (args) => {
        const pkg = packageOfSpecifier(args.path);
        if (!pkg || !HOST_ONLY_PACKAGES.includes(pkg)) return undefined;
        reached.push({ pkg, importer: args.importer });
        return { path: args.path, external: true };
      });
    },
  };
  const result = await esbuild.build({
    entryPoints: [entryPoint],
    absWorkingDir: PROJECT_ROOT,
    bundle: true,
    platform: 'node',
    target: 'node18',
    format: 'esm',
    write: false,
    metafile: true,
    legalComments: 'none',
    plugins: [guard],
    banner: {
      js: "import { createRequire as __vindRequire } from 'node:module'; const require = __vindRequire(import.meta.url);",
    },
    logLevel: 'silent',
  });
  if (reached.length > 0) {
    const relative = (path: string) =>
      path.startsWith(PROJECT_ROOT) ? path.slice(PROJECT_ROOT.length + 1) : path;
    const found = reached.map(({ pkg, importer }) => {
      const chain = importChain(result.metafile, relative(importer));
      return `${pkg} (${chain.join(' -> ')})`;
    });
    throw new AgentBundleError(
      `the node agent bundle pulls in host-only packages: ${[...new Set(found)].join('; ')}`,
    );
  }
  return result.outputFiles[0]!.text;
}
