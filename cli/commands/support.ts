import type { Command } from 'commander';
import { DEFAULT_KUBERNETES_VERSION } from '../../images/recipe.js';
import { validateClusterName, ConfigError } from '../cluster-config.js';
import { completionScript, parseCompletionShell } from '../completion.js';
import { exportLogs } from '../export-logs.js';
import { dockerRuntime } from '../runtime/docker-runtime.js';
import type { ContainerRuntime } from '../runtime/runtime.js';
import { LABELS, nodeImage, VIND_VERSION } from '../../shared/contract.js';
import { describeError, VindError } from '../../shared/errors.js';

export interface VersionReport {
  vind: string;
  /** The Kubernetes version `vind create` uses by default. */
  kubernetesVersion: string;
  engine: { endpoint?: string; reachable: boolean; error?: string };
  /** The node image `vind create` uses by default; `present` is absent when the engine was not asked. */
  nodeImage: {
    reference: string;
    present?: boolean;
    id?: string;
    kubernetesVersion?: string;
    inputsHash?: string;
    builtBy?: string;
  };
}

/** What `vind version` says; an engine that cannot be reached is reported, not raised. */
export async function versionReport(runtime: () => ContainerRuntime): Promise<VersionReport> {
  const reference = nodeImage(DEFAULT_KUBERNETES_VERSION);
  const report: VersionReport = {
    vind: VIND_VERSION,
    kubernetesVersion: DEFAULT_KUBERNETES_VERSION,
    engine: { reachable: false },
    nodeImage: { reference },
  };
  try {
    const engine = runtime();
    report.engine.endpoint = engine.endpoint;
    await engine.ping();
    const image = await engine.inspectImage(reference);
    report.engine.reachable = true;
    report.nodeImage.present = image !== undefined;
    if (image) {
      report.nodeImage.id = image.id;
      report.nodeImage.kubernetesVersion = image.labels[LABELS.kubernetesVersion];
      report.nodeImage.inputsHash = image.labels[LABELS.inputsHash];
      report.nodeImage.builtBy = image.labels[LABELS.version];
    }
  } catch (error) {
    report.engine.error = describeError(error);
  }
  return report;
}

export function formatVersionReport(report: VersionReport): string {
  const lines = [`vind ${report.vind}`, `Kubernetes (default): ${report.kubernetesVersion}`];
  const image = report.nodeImage;
  if (!report.engine.reachable) {
    lines.push(
      `node image ${image.reference}: not known, the engine could not be asked: ${report.engine.error}`,
    );
  } else if (!image.present) {
    lines.push(`node image ${image.reference}: not on the engine (build it with \`vind image build\`)`);
  } else {
    const details = [
      `Kubernetes ${image.kubernetesVersion ?? 'unknown'}`,
      image.inputsHash ? `inputs ${image.inputsHash.slice(0, 12)}` : undefined,
      image.builtBy ? `built by vind ${image.builtBy}` : undefined,
    ].filter(Boolean);
    lines.push(`node image ${image.reference}: present (${details.join(', ')})`);
  }
  if (report.engine.endpoint) lines.push(`engine: ${report.engine.endpoint}`);
  return `${lines.join('\n')}\n`;
}

export function registerSupportCommands(program: Command): void {
  program
    .command('version')
    .description('the version of vind, of its default node image and of Kubernetes')
    .option('--json', 'print JSON', false)
    .action(async (options: { json: boolean }) => {
      const report = await versionReport(dockerRuntime);
      process.stdout.write(
        options.json ? `${JSON.stringify(report, null, 2)}\n` : formatVersionReport(report),
      );
    });

  program
    .command('completion')
    .description('print a shell completion script: source <(vind completion bash)')
    .argument('<shell>', 'bash, zsh or fish')
    .action((shell: string) => {
      process.stdout.write(completionScript(program, parseCompletionShell(shell)));
    });

  const exportCommand = program.command('export').description('export what a cluster knows about itself');
  exportCommand
    .command('logs')
    .description("write a cluster's container, node and pod logs, events and objects into a folder")
    .argument('[name]', 'cluster name (default: vind)')
    .option('--output <dir>', 'the folder to write (default: ./vind-logs-<name>-<timestamp>)')
    .action(async (name: string | undefined, options: { output?: string }) => {
      const cluster = name ?? 'vind';
      try {
        validateClusterName(cluster);
      } catch (error) {
        if (error instanceof ConfigError) throw new VindError(error.message);
        throw error;
      }
      const runtime = dockerRuntime();
      await runtime.ping();
      const result = await exportLogs({
        runtime,
        cluster,
        output: options.output,
        progress: (line) => process.stderr.write(` • ${line}\n`),
      });
      if (result.notes.length > 0) {
        process.stderr.write(`${result.notes.length} thing(s) could not be read: see notes.txt\n`);
      }
      process.stdout.write(`${result.dir}\n`);
    });
}
