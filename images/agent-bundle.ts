// The node agent and the shared library it uses, bundled into one ES module for the Node.js of the
// node image. The bundle must hold only what runs in a node: a host-side library (the Docker client,
// the config schema, the command-line parser) in it means an import crossed the line between the
// agent and the CLI, and the build stops with the import chain that pulled it in.

import { join } from 'node:path';
import * as esbuild from 'esbuild';
import { PROJECT_ROOT } from './project-root.js';

/** Packages that belong to the host CLI only. */
export const HOST_ONLY_PACKAGES = ['dockerode', 'zod', 'commander', 'docker-modem', 'tar-stream', 'undici'];

export class AgentBundleError extends Error {}

/** The package an input path of the bundle belongs to, if it comes from node_modules. */
export function packageOf(inputPath: string): string | undefined {
  const match = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(inputPath);
  return match?.[1];
}

/** Names the host-only packages in a bundle's inputs, each with a chain of imports that reached it. */
export function forbiddenInputs(metafile: esbuild.Metafile): string[] {
  const importers = new Map<string, string>();
  for (const [path, input] of Object.entries(metafile.inputs)) {
    for (const imported of input.imports)
      if (!importers.has(imported.path)) importers.set(imported.path, path);
  }
  const found: string[] = [];
  const seen = new Set<string>();
  for (const path of Object.keys(metafile.inputs)) {
    const pkg = packageOf(path);
    if (!pkg || !HOST_ONLY_PACKAGES.includes(pkg) || seen.has(pkg)) continue;
    seen.add(pkg);
    const chain = [path];
    for (let at = importers.get(path); at && chain.length < 12; at = importers.get(at)) chain.unshift(at);
    found.push(`${pkg} (${chain.filter((p) => !packageOf(p)).join(' -> ')})`);
  }
  return found;
}

export async function bundleNodeAgent(
  entryPoint = join(PROJECT_ROOT, 'node-agent', 'main.ts'),
): Promise<string> {
  const result = await esbuild.build({
    entryPoints: [entryPoint],
    bundle: true,
    platform: 'node',
    target: 'node18',
    format: 'esm',
    write: false,
    metafile: true,
    legalComments: 'none',
    banner: {
      js: "import { createRequire as __vindRequire } from 'node:module'; const require = __vindRequire(import.meta.url);",
    },
    logLevel: 'silent',
  });
  const forbidden = forbiddenInputs(result.metafile);
  if (forbidden.length > 0) {
    throw new AgentBundleError(`the node agent bundle pulls in host-only packages: ${forbidden.join('; ')}`);
  }
  return result.outputFiles[0]!.text;
}
