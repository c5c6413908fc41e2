import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { DEFAULT_KUBERNETES_VERSION } from '../../images/recipe.js';
import {
  clusterKubeconfig,
  clusterNames,
  deleteCluster,
  listClusters,
  loadImages,
  sleepRecord,
} from '../clusters.js';
import { createCluster } from '../create/create.js';
import {
  ConfigError,
  type CreateFlags,
  resolveClusterConfig,
  validateClusterName,
} from '../cluster-config.js';
import { dockerRuntime } from '../runtime/docker-runtime.js';
import type { ContainerRuntime } from '../runtime/runtime.js';
import { parseSleepMode, setSleepAfter, sleepCluster, wakeCluster } from '../sleep.js';
import { SLEEP_MODES } from '../../shared/contract.js';
import {
  cacheRunning,
  listCachedImages,
  pruneImageCache,
  removeImageCache,
  setCacheLimit,
  shareHelperCredentials,
} from '../image-cache.js';
import { formatSleepAfter, parseDuration, parseSleepAfter } from '../duration.js';
import { InterruptedError, VindError } from '../../shared/errors.js';
import { consoleReporter, formatDuration } from '../progress.js';

interface CreateCommandOptions {
  workers?: string;
  kubernetesVersion?: string;
  image?: string;
  config?: string;
  wait?: string;
  retain: boolean;
  kubeconfig?: string;
  datastore?: string;
  podSecurity?: string;
  reuseDatastore: boolean;
  sleepAfter?: string;
}

function configError(error: unknown): never {
  if (error instanceof ConfigError) throw new VindError(error.message);
  throw error;
}

export function registerClusterCommands(program: Command): void {
  program
    .command('create')
    .description('create a cluster: one control-plane container and private worker containers')
    .argument('[name]', 'cluster name (default: vind)')
    .option('--workers <count>', 'number of worker nodes (default: 1)')
    .option('--kubernetes-version <version>', `Kubernetes version (default: ${DEFAULT_KUBERNETES_VERSION})`)
    .option('--image <image>', 'node image (default: vind/node:<kubernetes version>)')
    .option('--config <file>', 'cluster configuration file (apiVersion: vind.dev/v1alpha1, kind: Cluster)')
    .option('--datastore <url>', 'postgres://..., mysql://..., etcd://host:2379 (default: embedded SQLite)')
    .option(
      '--pod-security <level>',
      'Pod Security Standard enforced by default: privileged, baseline or restricted (default: privileged)',
    )
    .option(
      '--wait <duration>',
      'how long to wait for readiness, e.g. 5m (default: until ready; 0: do not wait)',
    )
    .option(
      '--reuse-datastore',
      'take over the objects an earlier cluster of this name left in the external datastore',
      false,
    )
    .option(
      '--sleep-after <duration>',
      'pause the cluster after this long without a client, e.g. 30m; the next request wakes it (default: never)',
    )
    .option('--retain', 'keep the containers when creation fails, for debugging', false)
    .option('--kubeconfig <path>', 'kubeconfig file to update (default: $KUBECONFIG or ~/.kube/config)')
    .action(async (name: string | undefined, options: CreateCommandOptions) => {
      const started = performance.now();
      const flags: CreateFlags = {
        name,
        workers: options.workers,
        kubernetesVersion: options.kubernetesVersion,
        image: options.image,
        datastore: options.datastore,
        podSecurity: options.podSecurity,
        reuseDatastore: options.reuseDatastore,
        sleepAfter: options.sleepAfter,
      };
      let fileText: string | undefined;
      if (options.config) {
        try {
          fileText = await readFile(options.config, 'utf8');
        } catch (error) {
          throw new VindError(
            `cannot read config file ${options.config}: ${(error as NodeJS.ErrnoException).code}`,
          );
        }
      }
      let waitMs: number | undefined;
      if (options.wait !== undefined) {
        try {
          waitMs = parseDuration(options.wait);
        } catch (error) {
          throw new VindError(`invalid --wait: ${(error as Error).message}`);
        }
      }
      let config;
      try {
        config = resolveClusterConfig({
          flags,
          fileText,
          fileLabel: options.config,
          defaultKubernetesVersion: DEFAULT_KUBERNETES_VERSION,
        });
      } catch (error) {
        configError(error);
      }

      const reporter = consoleReporter();
      const workers = `${config.workers.length} worker${config.workers.length === 1 ? '' : 's'}`;
      reporter.info(`Creating cluster "${config.name}" (Kubernetes ${config.kubernetesVersion}, ${workers})`);
      // Ctrl-C: stop waiting, undo what was created, exit 130.
      const controller = new AbortController();
      const onSignal = () => controller.abort();
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      // A closed terminal too: leave nothing behind.
      process.on('SIGHUP', onSignal);
      try {
        const cluster = await createCluster({
          config,
          runtime: dockerRuntime(),
          waitMs,
          retain: options.retain,
          kubeconfig: options.kubeconfig,
          reporter,
          signal: controller.signal,
        });
        const took = formatDuration(performance.now() - started);
        reporter.info(
          config.cni === 'none' && config.workers.length > 0
            ? `Cluster "${cluster.name}" is up in ${took}; its nodes stay NotReady until you install a CNI ` +
                `(networking.cni: none): kubectl --context ${cluster.context} get nodes`
            : `Cluster "${cluster.name}" is ready in ${took}: kubectl --context ${cluster.context} get nodes`,
        );
      } catch (error) {
        if (controller.signal.aborted) throw new InterruptedError();
        throw error;
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        process.off('SIGHUP', onSignal);
      }
    });

  program
    .command('delete')
    .description('delete clusters and everything they created')
    .argument('[names...]', 'cluster names (default: vind)')
    .option('--all', 'delete every vind cluster on this Docker engine', false)
    .option('--keep-cache', 'keep the blobs of the image cache when the last cluster goes', false)
    .option('--kubeconfig <path>', 'kubeconfig file to clean (default: $KUBECONFIG or ~/.kube/config)')
    .action(async (names: string[], options: { all: boolean; keepCache: boolean; kubeconfig?: string }) => {
      const runtime = dockerRuntime();
      await runtime.ping();
      const targets = options.all ? await clusterNames(runtime) : names.length > 0 ? names : ['vind'];
      for (const name of targets) {
        try {
          validateClusterName(name);
        } catch (error) {
          configError(error);
        }
        const { removed, keptInDatastore } = await deleteCluster(runtime, name, options.kubeconfig);
        process.stderr.write(removed ? `Deleted cluster "${name}"\n` : `No cluster "${name}"\n`);
        if (keptInDatastore) {
          process.stderr.write(
            `Its objects, Secrets included (encrypted), stay in ${keptInDatastore.datastore} under ` +
              `${keptInDatastore.space}/: remove them there, or take them over with ` +
              `\`vind create ${name} --datastore ... --reuse-datastore\`\n`,
          );
        }
      }
      // The image cache goes with the last cluster.
      if ((await clusterNames(runtime)).length === 0) await removeImageCache(runtime, options.keepCache);
    });

  /** `3m`, `2h`, `4d`: how long ago an RFC 3339 time was. */
  const formatAge = (since: string) => {
    const seconds = Math.max(0, (Date.now() - Date.parse(since)) / 1000);
    if (!Number.isFinite(seconds)) return '';
    if (seconds < 60) return `${Math.floor(seconds)}s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)}h`;
    return `${Math.floor(seconds / 86400)}d`;
  };

  const sleepTargets = async (runtime: ContainerRuntime, names: string[], all: boolean) => {
    const targets = all ? await clusterNames(runtime) : names.length > 0 ? names : ['vind'];
    for (const name of targets) {
      try {
        validateClusterName(name);
      } catch (error) {
        configError(error);
      }
    }
    return targets;
  };

  program
    .command('sleep')
    .description('free what clusters use while nobody needs them: pause (memory kept) or stop')
    .argument('[names...]', 'cluster names (default: vind)')
    .option('--all', 'every vind cluster on this Docker engine that is awake', false)
    .option('--mode <mode>', `${SLEEP_MODES.join(', ')}`, 'pause')
    .option(
      '--after <duration>',
      'do not sleep now: from now on pause after this long without a client, e.g. 30m, or never',
    )
    .action(async (names: string[], options: { all: boolean; mode: string; after?: string }) => {
      const mode = parseSleepMode(options.mode);
      let afterMs: number | undefined;
      if (options.after !== undefined) {
        try {
          afterMs = parseSleepAfter(options.after);
        } catch (error) {
          throw new VindError(`invalid --after: ${(error as Error).message}`);
        }
      }
      const runtime = dockerRuntime();
      await runtime.ping();
      const reporter = consoleReporter();
      let targets = await sleepTargets(runtime, names, options.all);
      if (afterMs !== undefined) {
        for (const name of targets) {
          await setSleepAfter(runtime, name, afterMs);
          process.stderr.write(
            afterMs > 0
              ? `Cluster "${name}" sleeps (pause) after ${formatSleepAfter(afterMs)} without a client; a request wakes it\n`
              : `Cluster "${name}" no longer sleeps by itself\n`,
          );
        }
        return;
      }
      if (options.all) {
        const asleep = await Promise.all(targets.map((t) => sleepRecord(runtime, t)));
        targets = targets.filter((_, i) => !asleep[i]);
      }
      for (const name of targets) {
        const started = performance.now();
        await sleepCluster(runtime, name, mode, reporter);
        process.stderr.write(
          `Cluster "${name}" sleeps (${mode}) after ${formatDuration(performance.now() - started)}: wake it with \`vind wake ${name}\` or any request\n`,
        );
      }
    });

  program
    .command('wake')
    .description('bring sleeping clusters back as they were')
    .argument('[names...]', 'cluster names (default: vind)')
    .option('--all', 'every sleeping vind cluster on this Docker engine', false)
    .action(async (names: string[], options: { all: boolean }) => {
      const runtime = dockerRuntime();
      await runtime.ping();
      const reporter = consoleReporter();
      let targets = await sleepTargets(runtime, names, options.all);
      if (options.all) {
        const asleep = await Promise.all(targets.map((t) => sleepRecord(runtime, t)));
        targets = targets.filter((_, i) => asleep[i]);
      }
      for (const name of targets) {
        const started = performance.now();
        const mode = await wakeCluster(runtime, name, reporter);
        process.stderr.write(
          `Cluster "${name}" is awake (from ${mode}) in ${formatDuration(performance.now() - started)}\n`,
        );
      }
    });

  program
    .command('list')
    .description('list clusters')
    .option('--json', 'print JSON', false)
    .action(async (options: { json: boolean }) => {
      const runtime = dockerRuntime();
      await runtime.ping();
      const clusters = await listClusters(runtime);
      if (options.json) {
        process.stdout.write(`${JSON.stringify(clusters, null, 2)}\n`);
        return;
      }
      if (clusters.length === 0) {
        process.stderr.write('No clusters\n');
        return;
      }
      const rows = [
        ['NAME', 'STATE', 'AUTO-SLEEP', 'NODES', 'LOADBALANCERS', 'KUBERNETES', 'ENDPOINT'],
        ...clusters.map((c) => [
          c.name,
          c.sleeping ? `${c.state} ${formatAge(c.sleeping.since)}` : c.state,
          c.sleepAfter ?? '-',
          String(c.nodes),
          c.loadBalancers === undefined ? '-' : String(c.loadBalancers),
          c.kubernetesVersion,
          c.endpoint,
        ]),
      ];
      const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
      for (const row of rows) {
        process.stdout.write(
          `${row
            .map((cell, i) => cell.padEnd(widths[i]!))
            .join('   ')
            .trimEnd()}\n`,
        );
      }
      // Why a cluster is failing, one node per line; then LoadBalancer ports published on the host.
      for (const problem of clusters.flatMap((c) => c.problems)) process.stdout.write(`  ${problem}\n`);
      for (const cluster of clusters) {
        for (const port of cluster.hostPorts ?? []) process.stdout.write(`  ${cluster.name}: ${port}\n`);
      }
    });

  program
    .command('kubeconfig')
    .description("print a cluster's kubeconfig")
    .argument('[name]', 'cluster name (default: vind)')
    .option(
      '--internal',
      'address the API server by container name, for clients on the cluster network',
      false,
    )
    .action(async (name: string | undefined, options: { internal: boolean }) => {
      const runtime = dockerRuntime();
      await runtime.ping();
      process.stdout.write(await clusterKubeconfig(runtime, name ?? 'vind', options.internal));
    });
}

export function registerImageLoadCommand(image: Command): void {
  image
    .command('load')
    .description("copy images from the host's Docker into every node of a cluster")
    .argument('<images...>', 'image references')
    .option('--cluster <name>', 'cluster name', 'vind')
    .action(async (images: string[], options: { cluster: string }) => {
      const runtime = dockerRuntime();
      await runtime.ping();
      await loadImages(runtime, options.cluster, images, consoleReporter());
    });
}

export function registerCacheCommands(program: Command): void {
  const cache = program
    .command('cache')
    .description("show the image cache that serves the host's images to every cluster")
    .option('--json', 'print JSON', false)
    .option('--limit <size>', 'keep at most this much, e.g. 30GiB; least recently used blobs go first')
    .action(async (options: { json: boolean; limit?: string }) => {
      const runtime = dockerRuntime();
      await runtime.ping();
      // Credentials from the user's helpers (keychains) reach the cache only through the CLI.
      if (await cacheRunning(runtime)) await shareHelperCredentials(runtime);
      if (options.limit !== undefined) {
        if (!(await cacheRunning(runtime))) {
          throw new VindError('no image cache is running: it starts with the first cluster (`vind create`)');
        }
        await setCacheLimit(runtime, options.limit);
      }
      const listing = await listCachedImages(runtime);
      if (options.json) {
        process.stdout.write(`${JSON.stringify(listing, null, 2)}\n`);
        return;
      }
      const { images } = listing;
      for (const image of images) {
        process.stdout.write(
          `${image.reference}   ${image.imageId.slice(7, 19)}   ${formatBytes(image.size)}\n`,
        );
      }
      process.stdout.write(
        `${images.length} image${images.length === 1 ? '' : 's'}, ` +
          `used ${formatBytes(listing.used)} of ${formatBytes(listing.limit)}\n`,
      );
    });
  cache
    .command('prune')
    .description('remove every cached blob; images are exported again when next pulled')
    .action(async () => {
      const runtime = dockerRuntime();
      await runtime.ping();
      await pruneImageCache(runtime);
      process.stderr.write('Pruned the image cache\n');
    });
}

function formatBytes(bytes: number): string {
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
}
