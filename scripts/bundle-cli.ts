// Bundles the CLI into one file, dist/cli/main.js, in place of the compiled entry point. Node loads
// one file in a third of the time it takes to resolve and load the several hundred files of the CLI
// and its dependencies (dockerode alone brings ssh2 and docker-modem), and every `vind` command pays
// that time before it does anything. The rest of dist/ stays as compiled, for tests and benchmarks.

import { build } from 'esbuild';
import { PROJECT_ROOT } from '../images/project-root.js';

await build({
  entryPoints: ['cli/main.ts'],
  absWorkingDir: PROJECT_ROOT,
  outfile: 'dist/cli/main.js',
  allowOverwrite: true,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  // esbuild runs its own binary (image builds bundle the node agent with it); ssh2's native addons are
  // optional, loaded only if present.
  external: ['esbuild', '*.node', 'cpu-features'],
  // CommonJS dependencies in an ES module expect require, __filename and __dirname.
  banner: {
    js: [
      "import { createRequire as __vindRequire } from 'node:module';",
      "import { fileURLToPath as __vindPath } from 'node:url';",
      'const require = __vindRequire(import.meta.url);',
      'const __filename = __vindPath(import.meta.url);',
      "const __dirname = __vindPath(new URL('.', import.meta.url));",
    ].join(' '),
  },
  logLevel: 'error',
});
