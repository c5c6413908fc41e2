import { defineConfig } from 'vitest/config';

// CI asks for a JSON summary next to the usual output, to print one closing line of counts.
const resultsFile = process.env.VIND_TEST_RESULTS;

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // End-to-end tests start real containers; they share one Docker engine and run one file at a time.
    fileParallelism: false,
    testTimeout: 300_000,
    hookTimeout: 300_000,
    reporters: resultsFile ? ['default', 'json'] : ['default'],
    outputFile: resultsFile ? { json: resultsFile } : undefined,
  },
});
