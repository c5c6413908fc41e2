import { describe, expect, it } from 'vitest';
import { summarize, summaryLines, type VitestReport } from '../../scripts/test-summary.js';

function report(files: VitestReport['testResults'], extra: Partial<VitestReport> = {}): VitestReport {
  const all = files.flatMap((f) => f.assertionResults);
  return {
    numPassedTests: all.filter((a) => a.status === 'passed').length,
    numFailedTests: all.filter((a) => a.status === 'failed').length,
    numPendingTests: all.filter((a) => a.status === 'skipped').length,
    success: files.every((f) => f.status === 'passed'),
    testResults: files,
    ...extra,
  };
}

describe('the closing line of a CI run', () => {
  it('counts a file whose setup failed as a failure, though its tests read as skipped', () => {
    const summary = summarize(
      report([
        {
          name: '/repo/test/e2e/datastore.test.ts',
          status: 'failed',
          message: "Docker's default bridge network has no gateway address\n    at stack",
          assertionResults: [{ status: 'skipped' }, { status: 'skipped' }],
        },
        { name: '/repo/test/unit/a.test.ts', status: 'passed', assertionResults: [{ status: 'passed' }] },
      ]),
      '/repo',
    );
    expect(summary).toMatchObject({ passed: 1, failed: 1, skipped: 2 });
    expect(summaryLines(summary)).toEqual([
      "failed outside a test: test/e2e/datastore.test.ts: Docker's default bridge network has no gateway address",
      'tests: 1 passed, 1 failed, 2 skipped',
    ]);
  });

  it('counts a file that failed to import, with no tests at all', () => {
    const summary = summarize(
      report([{ name: '/repo/test/x.test.ts', status: 'failed', message: 'boom', assertionResults: [] }]),
      '/repo',
    );
    expect(summary.failed).toBe(1);
  });

  it('does not count a file twice when its failure is a failed test', () => {
    const summary = summarize(
      report([
        {
          name: '/repo/t.test.ts',
          status: 'failed',
          message: '',
          assertionResults: [{ status: 'failed' }, { status: 'passed' }],
        },
      ]),
    );
    expect(summary).toMatchObject({ passed: 1, failed: 1, brokenFiles: [] });
  });

  it('fails a run that vitest failed for an error belonging to no file', () => {
    const summary = summarize(
      report([{ name: '/repo/t.test.ts', status: 'passed', assertionResults: [{ status: 'passed' }] }], {
        success: false,
      }),
    );
    expect(summary.failed).toBe(1);
  });

  it('reads a green run as green', () => {
    const summary = summarize(
      report([{ name: '/repo/t.test.ts', status: 'passed', assertionResults: [{ status: 'passed' }] }]),
    );
    expect(summaryLines(summary)).toEqual(['tests: 1 passed, 0 failed, 0 skipped']);
  });
});
