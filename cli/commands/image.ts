import type { Command } from 'commander';
import { buildNodeImage } from '../../images/build.js';
import { cacheDir, logDir } from '../paths.js';
import { consoleReporter } from '../progress.js';
import { dockerRuntime } from '../runtime/docker-runtime.js';
import { registerImageLoadCommand } from './cluster.js';

export function registerImageCommands(program: Command): void {
  const image = program.command('image').description('build and manage node images');
  image
    .command('build')
    .description('build the node image from Debian packages and Go modules (skipped when up to date)')
    .option('--kubernetes-version <version>', 'Kubernetes version to build, e.g. v1.36.3')
    .option('--force', 'rebuild even when the inputs did not change', false)
    .option(
      '--tag <reference>',
      'tag the image with this reference (default: vind/node:<kubernetes version>)',
    )
    .action(async (options: { kubernetesVersion?: string; force: boolean; tag?: string }) => {
      const reporter = consoleReporter();
      const started = performance.now();
      const result = await buildNodeImage({
        kubernetesVersion: options.kubernetesVersion,
        force: options.force,
        tag: options.tag,
        engine: dockerRuntime(),
        reporter,
        dirs: { cacheDir: cacheDir(), logDir: logDir() },
      });
      if (!result.skipped) {
        reporter.info(`built ${result.reference} in ${((performance.now() - started) / 1000).toFixed(1)}s`);
      }
      process.stdout.write(`${result.reference}\n`);
    });
  registerImageLoadCommand(image);
}
