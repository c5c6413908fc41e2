// The closing line of a CI run, read from vitest's JSON report. A test file that fails outside any
// test (an import error, a failing beforeAll) marks its tests skipped, not failed, so counting tests
// alone would hide it: such a file counts as one failure, and is named on its own line above.

import { readFileSync } from 'node:fs';
import { relative } from 'node:path';

interface FileResult {
  name: string;
  status: string;
  message?: string;
  assertionResults: { status: string }[];
}

export interface VitestReport {
  numPassedTests: number;
  numFailedTests: number;
  numPendingTests: number;
  numTodoTests?: number;
  success: boolean;
  testResults: FileResult[];
}

export interface TestSummary {
  passed: number;
  failed: number;
  skipped: number;
  /** Files that failed outside any test, with the first line of what went wrong. */
  brokenFiles: { file: string; reason: string }[];
}

export function summarize(report: VitestReport, root = process.cwd()): TestSummary {
  const brokenFiles = report.testResults
    .filter((f) => f.status === 'failed' && !f.assertionResults.some((a) => a.status === 'failed'))
    .map((f) => ({
      file: relative(root, f.name),
      reason: (f.message ?? '').split('\n')[0] || 'failed outside a test',
    }));
  let failed = report.numFailedTests + brokenFiles.length;
  // vitest also fails a run for errors it cannot pin on a file (an unhandled rejection after a test).
  if (!report.success && failed === 0) failed = 1;
  return {
    passed: report.numPassedTests,
    failed,
    skipped: report.numPendingTests + (report.numTodoTests ?? 0),
    brokenFiles,
  };
}

export function summaryLines(summary: TestSummary): string[] {
  return [
    ...summary.brokenFiles.map((f) => `failed outside a test: ${f.file}: ${f.reason}`),
    `tests: ${summary.passed} passed, ${summary.failed} failed, ${summary.skipped} skipped`,
  ];
}

function main(file: string | undefined): number {
  let report: VitestReport;
  try {
    report = JSON.parse(readFileSync(file ?? '', 'utf8')) as VitestReport;
  } catch (error) {
    // No report means vitest itself did not finish: that is a failure, never a silent pass.
    console.log(`no test report (${(error as Error).message.split('\n')[0]})`);
    console.log('tests: 0 passed, 1 failed, 0 skipped');
    return 1;
  }
  const summary = summarize(report);
  for (const line of summaryLines(summary)) console.log(line);
  return summary.failed > 0 ? 1 : 0;
}

if (process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  process.exitCode = main(process.argv[2]);
}
