// Kubernetes' own end-to-end tests against a vind cluster, so vind is judged by upstream's tests and
// not only by its own. One cluster of 1 control plane + 2 workers is created for the run and removed
// at the end (also on a failure or Ctrl-C):
//
//   node dist/bench/upstream-e2e.js [--image vind/node:v1.36.3] [--focus REGEX] [--skip REGEX]
//                                   [--name CLUSTER]
//
// e2e.test is built for the node image's Kubernetes version from the Go module proxy
// (test/support/upstream-e2e.ts: our test main over upstream's framework, network/netpol and the
// common suites), cached per version; the first compile takes a long while. agnhost, busybox, pause
// and nonewprivs are made under upstream's names and reach the nodes through the image cache. By default the focus
// is upstream's NetworkPolicy suite ("Netpol") without SCTP, which the kernel here cannot carry.
//
// Prints passed, failed and skipped with the duration, then every failure with the first line of
// its message. The full output and Ginkgo's JSON report stay in the cache's logs folder. Exits 1
// when a spec failed.

import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createWriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { execa } from 'execa';
import { logDir } from '../cli/paths.js';
import { formatDuration } from '../cli/progress.js';
import { DEFAULT_KUBERNETES_VERSION } from '../images/recipe.js';
import { parseKubernetesVersion } from '../images/kubernetes-module.js';
import { LABELS, nodeImage } from '../shared/contract.js';
import { describeError } from '../shared/errors.js';
import {
  compileUpstreamE2e,
  ensureUpstreamImages,
  summarizeGinkgoReport,
  type E2eSummary,
} from '../test/support/upstream-e2e.js';
import { docker, kubectlBinary } from '../test/support/workloads.js';
import { BenchCluster, firstLine } from '../test/support/bench-cluster.js';

function option(name: string, fallback: string): string {
  const index = process.argv.indexOf(name);
  return index >= 0 ? (process.argv[index + 1] ?? fallback) : fallback;
}

const image = option('--image', nodeImage(DEFAULT_KUBERNETES_VERSION));
const focus = option('--focus', 'Netpol');
const skip = option('--skip', 'SCTPConnectivity|\\[Disruptive\\]|\\[Serial\\]|\\[Flaky\\]');

const cluster = option('--name', `e2e-upstream-${process.pid}`);
let testing: ReturnType<typeof execa> | undefined;
// e2e.test is ended before the cluster goes.
const bench = await BenchCluster.open(cluster, 'vind-upstream-e2e-', async () => {
  testing?.kill('SIGTERM');
  await testing?.catch(() => undefined);
});
const { scratch, kubeconfig } = bench;
const stamp = new Date().toISOString().replaceAll(/[:.]/g, '-');
const outputLog = join(logDir(), `upstream-e2e-${stamp}.log`);
const reportFile = join(logDir(), `upstream-e2e-${stamp}.json`);

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

async function step<T>(what: string, run: (note: (text: string) => void) => Promise<T>): Promise<T> {
  const started = performance.now();
  say(`${what} …`);
  const result = await run((text) => say(`  ${text}`));
  say(`${what}: ${formatDuration(performance.now() - started)}`);
  return result;
}

// ---- the run ----

/** Runs e2e.test, its whole output to the log; each spec's result and name also to the console. */
async function runE2e(e2eTest: string, kubectl: string): Promise<number> {
  const args = [
    `--kubeconfig=${kubeconfig}`,
    '--provider=skeleton',
    `--kubectl-path=${kubectl}`,
    `--ginkgo.focus=${focus}`,
    `--ginkgo.skip=${skip}`,
    '--ginkgo.v',
    '--ginkgo.no-color',
    // Ginkgo's own default of one hour is shorter than a serial run of a whole suite here.
    '--ginkgo.timeout=6h',
    `--ginkgo.json-report=${reportFile}`,
  ];
  const log = createWriteStream(outputLog);
  testing = execa(e2eTest, args, { reject: false, all: true, stdin: 'ignore', cwd: scratch });
  const lines = createInterface({ input: testing.all! });
  // With -v Ginkgo opens each spec with a rule and its name, and closes it with
  // "• [FAILED] [12.3 seconds]" (or just the time).
  let afterRule = false;
  let spec = '';
  lines.on('line', (line) => {
    log.write(`${line}\n`);
    if (afterRule) spec = line.replace(/ \[sig-[^\]]*\]$/, '');
    afterRule = line === '------------------------------';
    if (/^• \[/.test(line)) say(`  ${line.slice(2)} ${spec}`);
    else if (/^Ran \d+ of/.test(line)) say(`  ${line}`);
  });
  const finished = await testing;
  await new Promise<void>((resolve) => log.end(resolve));
  return finished.exitCode ?? 1;
}

function printSummary(summary: E2eSummary): void {
  say('');
  say(`upstream e2e on ${image} (focus ${JSON.stringify(focus)}, skip ${JSON.stringify(skip)}):`);
  say(
    `  ${summary.selected} selected: ${summary.passed} passed, ${summary.failed} failed, ` +
      `${summary.skipped} skipped, in ${formatDuration(summary.seconds * 1000)}`,
  );
  for (const failure of summary.failures) {
    say(`  FAILED ${failure.name} (${Math.round(failure.seconds)} s)`);
    if (failure.message) say(`      ${failure.message}`);
  }
  for (const skipped of summary.skips) {
    say(`  skipped ${skipped.name}: ${skipped.message ?? ''}`);
  }
  say(`  output: ${outputLog}`);
  say(`  report: ${reportFile}`);
}

let failed = true;
try {
  const labels = (await docker().getImage(image).inspect()).Config.Labels ?? {};
  const versionLabel = labels[LABELS.kubernetesVersion];
  if (!versionLabel)
    throw new Error(`${image} carries no ${LABELS.kubernetesVersion} label: is it a vind node image?`);
  const version = parseKubernetesVersion(versionLabel);
  await mkdir(logDir(), { recursive: true });
  const build = await step(`build e2e.test and its workload programs for ${version.tag}`, (note) =>
    compileUpstreamE2e(version, note),
  );
  await step('images under upstream names', (note) => ensureUpstreamImages(build, note));
  await step(`create cluster ${cluster} (${image}, 2 workers)`, async () => {
    const result = await bench.create(['--workers', '2', '--image', image]);
    if (result.exitCode !== 0) throw new Error(`vind create: ${firstLine(result.stderr)}`);
  });
  const kubectl = await kubectlBinary(image);
  const exitCode = await step('e2e.test', () => runE2e(build.e2eTest, kubectl));
  const summary = summarizeGinkgoReport(await readFile(reportFile, 'utf8').catch(() => '[]'));
  printSummary(summary);
  if (summary.selected === 0 && exitCode === 0) throw new Error('the focus and skip selected no spec');
  failed = exitCode !== 0 || summary.failed > 0;
} catch (error) {
  process.stderr.write(`upstream e2e: ${describeError(error)}\n`);
} finally {
  // Also after an interruption: the signal's handler ends e2e.test, which brings the run here too.
  await bench.cleanup();
}
process.exit(bench.exitCode(failed));
