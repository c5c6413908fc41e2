// `vind image build`: the node image from Debian packages and Go modules, offline from any
// container registry. Each stage reports its duration; each stage's output is cached so that a
// build whose inputs did not change is skipped, and a changed input rebuilds only what it touches.
// The stages live in their own modules: base-image.ts, go-build.ts, agent-bundle.ts.

import { chmod, copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  COREDNS_IMAGE,
  LABELS,
  LOCAL_PATH_HELPER_IMAGE,
  LOCAL_PATH_PROVISIONER_IMAGE,
  METRICS_SERVER_IMAGE,
  nodeImage,
  PAUSE_IMAGE,
  PRELOADED_IMAGES_DIR,
  SEED,
  VIND_VERSION,
} from '../shared/contract.js';
import { VindError } from '../shared/errors.js';
import { bundleNodeAgent } from './agent-bundle.js';
import { baseImageReference, ensureBaseImage } from './base-image.js';
import { packDirectory } from './build-context.js';
import { buildDockerArchive } from './docker-archive.js';
import type { BuildReporter, ImageEngine } from './engine.js';
import {
  type BuildDirs,
  compileGoTool,
  compileKubernetes,
  compilePause,
  downloadModule,
  goVersion,
} from './go-build.js';
import { inputsHash, shortHash } from './inputs.js';
import { type KubernetesVersion, parseKubernetesVersion, VersionError } from './kubernetes-module.js';
import { busyboxPackage, fetchBusybox, localPathArchives } from './local-path.js';
import { nodeCommandLines, nodeDockerfile } from './node-dockerfile.js';
import { KUBERNETES_PATCHES } from './kubernetes-patches.js';
import { PROJECT_ROOT } from './project-root.js';
import { DEFAULT_KUBERNETES_VERSION, GO_TOOLS, goTool, KUBERNETES_COMPONENTS, POD_TOOLS } from './recipe.js';
import { requireCommand, StageFailure, stageRunner } from './stage-runner.js';

export interface ImageBuildOptions {
  kubernetesVersion?: string;
  /** Rebuild the node image even when its inputs did not change. */
  force?: boolean;
  /** Tag the image with this reference instead of vind/node:<version>. */
  tag?: string;
  engine: ImageEngine;
  reporter: BuildReporter;
  /** Where compiled binaries, build folders and logs are kept. */
  dirs: BuildDirs;
}

export interface ImageBuildResult {
  reference: string;
  skipped: boolean;
  inputsHash: string;
}

/**
 * The image's agent runs `image-seed` in a throw-away container of the built image, given the
 * preloaded image archives (only that container: the seed replaces them) and a tmpfs to work in;
 * its file system is committed as the node image, with the image's own command back in place.
 */
export async function seedNodeImage(
  engine: ImageEngine,
  options: {
    unseeded: string;
    reference: string;
    logDir: string;
    /** The build context, and the archives in it at their paths in the image. */
    context: string;
    archives: string[];
  },
): Promise<void> {
  const logFile = join(options.logDir, 'image-build-seed.log');
  let container: string | undefined;
  try {
    const run = await engine.runToCompletion({
      image: options.unseeded,
      command: [SEED.command],
      tmpfs: [SEED.work, '/run', '/tmp'],
      files: await packDirectory(options.context, options.archives),
    });
    container = run.container;
    await writeFile(logFile, run.output);
    if (run.exitCode !== 0) {
      const last = run.output.trim().split('\n').at(-1) || `exit code ${run.exitCode}`;
      throw new StageFailure(`${SEED.command}: ${last} (full log: ${logFile})`);
    }
    await engine.commitContainer(run.container, options.reference, nodeCommandLines());
  } finally {
    if (container) await engine.removeContainer(container).catch(() => undefined);
    // The commit's parent stays, untagged; a failed seed leaves nothing tagged.
    await engine.removeImage(options.unseeded).catch(() => undefined);
  }
}

export function parseVersionOption(input: string | undefined): KubernetesVersion {
  try {
    return parseKubernetesVersion(input ?? DEFAULT_KUBERNETES_VERSION);
  } catch (error) {
    if (error instanceof VersionError) throw new VindError(`invalid --kubernetes-version: ${error.message}`);
    throw error;
  }
}

export async function buildNodeImage(options: ImageBuildOptions): Promise<ImageBuildResult> {
  const { reporter } = options;
  const version = parseVersionOption(options.kubernetesVersion);
  const { engine, dirs } = options;
  const reference = options.tag ?? nodeImage(version.tag);
  await engine.ping();
  await requireCommand('go', 'install Go 1.24 or later (https://go.dev/doc/install) to build the node image');

  const agentBundle = await reporter.step('bundle node-agent', () => bundleNodeAgent());
  const go = await goVersion();
  const baseImage = baseImageReference();
  const dockerfile = nodeDockerfile(baseImage);
  const pauseSource = await readFile(join(PROJECT_ROOT, 'images', 'pause', 'pause.c'), 'utf8');
  const busybox = await busyboxPackage();
  const hash = inputsHash({
    kubernetes: version.tag,
    tools: JSON.stringify(GO_TOOLS),
    components: KUBERNETES_COMPONENTS.join(','),
    patches: JSON.stringify(KUBERNETES_PATCHES),
    images: `${PAUSE_IMAGE},${COREDNS_IMAGE},${METRICS_SERVER_IMAGE},${LOCAL_PATH_PROVISIONER_IMAGE},${LOCAL_PATH_HELPER_IMAGE}`,
    busybox: `${busybox.name}=${busybox.version} sha256:${busybox.sha256}`,
    dockerfile,
    pause: pauseSource,
    agent: agentBundle,
    go,
  });

  const existing = await engine.inspectImage(reference);
  if (!options.force && existing?.labels[LABELS.inputsHash] === hash) {
    reporter.info(`${reference} is up to date (inputs ${shortHash(hash)})`);
    return { reference, skipped: true, inputsHash: hash };
  }

  // The module proxy is asked first: a wrong version or an unreachable proxy fails in seconds.
  await reporter.step(`resolve k8s.io/kubernetes ${version.tag}`, async () => {
    const runner = await stageRunner(dirs.logDir, 'resolve');
    await downloadModule(runner, 'k8s.io/kubernetes', version.tag);
  });
  await requireCommand('gcc', 'install it with `sudo apt-get install build-essential libseccomp-dev`');

  await ensureBaseImage(engine, dirs, baseImage, reporter);
  const kubernetesDir = await reporter.step(`compile Kubernetes ${version.tag}`, (note) =>
    compileKubernetes(dirs, version, go, note),
  );
  const toolDirs: string[] = [];
  for (const tool of GO_TOOLS) {
    toolDirs.push(
      await reporter.step(`compile ${tool.name} ${tool.version}`, (note) =>
        compileGoTool(dirs, tool, go, note),
      ),
    );
  }
  const pauseBinary = await reporter.step('compile pause', (note) => compilePause(dirs, note));
  const busyboxDir = await reporter.step(`download ${busybox.name} ${busybox.version}`, (note) =>
    fetchBusybox(dirs, busybox, note),
  );

  const context = await mkdtemp(join(tmpdir(), 'vind-node-image-'));
  try {
    const built = await reporter.step('assemble build context', async () => {
      const files: string[] = [];
      await mkdir(join(context, 'bin'));
      for (const dir of [kubernetesDir, ...toolDirs]) {
        for (const name of await readdir(dir)) {
          if (name.startsWith('.')) continue;
          // These run as pods, not on the node: they only go into their images below.
          if (POD_TOOLS.includes(name)) continue;
          await copyFile(join(dir, name), join(context, 'bin', name));
          await chmod(join(context, 'bin', name), 0o755);
          files.push(`bin/${name}`);
        }
      }
      // Not in the Dockerfile's files: only the seeding container gets them, at their place in the image.
      const images = join(context, PRELOADED_IMAGES_DIR);
      await mkdir(images, { recursive: true });
      const archives: string[] = [];
      const archive = (file: string) => join(PRELOADED_IMAGES_DIR, file).replace(/^\//, '');
      const pause = await buildDockerArchive({
        reference: PAUSE_IMAGE,
        files: [{ path: 'pause', content: await readFile(pauseBinary), mode: 0o755 }],
        entrypoint: ['/pause'],
        user: '65535:65535',
      });
      await writeFile(join(images, 'pause.tar'), pause.tar);
      const corednsBinary = join(toolDirs[GO_TOOLS.indexOf(goTool('coredns'))]!, 'coredns');
      const coredns = await buildDockerArchive({
        reference: COREDNS_IMAGE,
        files: [{ path: 'coredns', content: await readFile(corednsBinary), mode: 0o755 }],
        entrypoint: ['/coredns'],
        exposedPorts: ['53/tcp', '53/udp'],
      });
      await writeFile(join(images, 'coredns.tar'), coredns.tar);
      const metricsServerBinary = join(
        toolDirs[GO_TOOLS.indexOf(goTool('metrics-server'))]!,
        'metrics-server',
      );
      const metricsServer = await buildDockerArchive({
        reference: METRICS_SERVER_IMAGE,
        files: [{ path: 'metrics-server', content: await readFile(metricsServerBinary), mode: 0o755 }],
        entrypoint: ['/metrics-server'],
        user: '1000:1000',
        exposedPorts: ['10250/tcp'],
      });
      await writeFile(join(images, 'metrics-server.tar'), metricsServer.tar);
      archives.push(archive('pause.tar'), archive('coredns.tar'), archive('metrics-server.tar'));
      const provisionerBinary = join(
        toolDirs[GO_TOOLS.indexOf(goTool('local-path-provisioner'))]!,
        'local-path-provisioner',
      );
      for (const localPath of await localPathArchives(provisionerBinary, busyboxDir)) {
        await writeFile(join(images, localPath.file), localPath.tar);
        archives.push(archive(localPath.file));
      }
      await writeFile(join(context, 'node-agent.mjs'), agentBundle);
      await writeFile(join(context, 'Dockerfile'), dockerfile);
      files.push('node-agent.mjs', 'Dockerfile');
      return { files, archives };
    });
    // Tagged as the node image only once seeded: a build that fails there leaves no image that
    // looks up to date.
    const unseeded = `${reference}-unseeded`;
    await reporter.step(`build ${unseeded}`, async () => {
      const logFile = join(dirs.logDir, 'image-build-node.log');
      await writeFile(logFile, '');
      try {
        await engine.buildImage(await packDirectory(context, built.files), {
          tag: unseeded,
          labels: {
            [LABELS.inputsHash]: hash,
            [LABELS.kubernetesVersion]: version.tag,
            [LABELS.version]: VIND_VERSION,
          },
          logFile,
        });
      } catch (error) {
        throw new StageFailure(`docker build: ${(error as Error).message} (full log: ${logFile})`);
      }
    });
    await reporter.step(`seed ${reference}`, async (note) => {
      await seedNodeImage(engine, {
        unseeded,
        reference,
        logDir: dirs.logDir,
        context,
        archives: built.archives,
      });
      const size = (await engine.inspectImage(reference))?.size;
      if (size) note(`${Math.round(size / 1e6)} MB`);
    });
  } finally {
    await rm(context, { recursive: true, force: true });
  }
  // The image this build replaced is left without a tag; remove it unless a container still uses it.
  if (existing && existing.id !== (await engine.inspectImage(reference))?.id) {
    await engine.removeImage(existing.id).catch(() => undefined);
  }
  return { reference, skipped: false, inputsHash: hash };
}
