import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// The direction of dependencies, enforced: cli -> images -> shared, cli -> shared,
// node-agent -> shared, vpn -> shared. shared/ runs inside the node image too, on its Node.js, so
// it takes only Node built-ins and yaml. Host-only packages never reach the node agent.
const HOST_ONLY = ['dockerode', 'docker-modem', 'zod', 'commander', 'undici', 'esbuild'].map((name) => ({
  name,
  message: 'a host-only package: the node agent and the shared library run inside the node image',
}));

const crossing = (folders, why) => ({
  group: folders.flatMap((f) => [`**/${f}/**`, `../${f}`, `../../${f}`]),
  message: why,
});

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['node-agent/**/*.ts', 'vpn/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: HOST_ONLY,
          patterns: [
            crossing(
              ['cli', 'images', 'test', 'bench', 'scripts'],
              'node-agent/ and vpn/ import only shared/ (the contract) and their own folder',
            ),
          ],
        },
      ],
    },
  },
  {
    files: ['shared/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              regex: '^(?!node:|yaml$|\\./)',
              message:
                'shared/ takes only Node built-ins, yaml and its own modules: it runs in the node image too',
            },
          ],
        },
      ],
    },
  },
  {
    files: ['images/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            crossing(
              ['cli', 'node-agent', 'test', 'bench'],
              'images/ is used by cli/; it imports shared/ only',
            ),
          ],
        },
      ],
    },
  },
  {
    files: ['bench/**/*.ts', 'test/support/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [{ name: 'vitest', message: 'benchmarks and test support run without a test framework' }],
          patterns: [crossing(['e2e', 'unit'], 'benchmarks use test/support/, not the test files')],
        },
      ],
    },
  },
);
