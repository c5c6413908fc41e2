// `vind image build`: the node image from Debian packages and Go modules, offline from any
// container registry. Each stage reports its duration; each stage's output is cached so that a
// build whose inputs did not change is skipped, and a changed input rebuilds only what it touches.

import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import * as esbuild from 'esbuild';
import {
  buildImage,
  ensureDockerReachable,
  importRootfs,
  inspectImage,
  LABEL_INPUTS_HASH,
  LABEL_KUBERNETES_VERSION,
  LABEL_VERSION,
  packDirectory,
  removeImage,
} from '../cli/docker.js';
import { VindError } from '../shared/errors.js';
import { cacheDir, logDir } from '../cli/paths.js';
import type { Reporter } from '../cli/progress.js';
import { VIND_VERSION } from '../cli/version.js';
import { buildDockerArchive } from './docker-archive.js';
import { inputsHash, shortHash } from './inputs.js';
import {
  type KubernetesVersion,
  parseKubernetesVersion,
  VersionError,
  versionLdflags,
  wrapperGoMod,
  wrapperToolsGo,
} from './kubernetes-module.js';
import { nodeDockerfile, ROOTFS_REMOVALS } from './node-dockerfile.js';
import {
  BASE_IMAGE_REPOSITORY,
  CNI_PLUGINS_KEPT,
  COREDNS_IMAGE,
  DEBIAN_PACKAGES,
  DEBIAN_SUITE,
  DEFAULT_KUBERNETES_VERSION,
  GO_TOOLS,
  type GoTool,
  goTool,
  KUBERNETES_COMPONENTS,
  NODE_IMAGE_REPOSITORY,
  PAUSE_IMAGE,
} from './recipe.js';

export const PROJECT_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface ImageBuildOptions {
  kubernetesVersion?: string;
  /** Rebuild the node image even when its inputs did not change. */
  force?: boolean;
  reporter: Reporter;
}

export interface ImageBuildResult {
  reference: string;
  skipped: boolean;
  inputsHash: string;
}

export function nodeImageReference(version: string): string {
  return `${NODE_IMAGE_REPOSITORY}:${version}`;
}

export function parseVersionOption(input: string | undefined): KubernetesVersion {
  try {
    return parseKubernetesVersion(input ?? DEFAULT_KUBERNETES_VERSION);
  } catch (error) {
    if (error instanceof VersionError) throw new VindError(`invalid --kubernetes-version: ${error.message}`);
    throw error;
  }
}

/** A stage failure names the stage and the log that holds the whole output. */
class StageFailure extends VindError {}

interface RunOptions {
  cwd?: string;
  env?: Record<string, string>;
  /** Return the output of a failed command instead of throwing. */
  allowFailure?: boolean;
}

interface Runner {
  run(command: string, args: string[], options?: RunOptions): Promise<{ stdout: string; failed: boolean }>;
  fail(reason: string): StageFailure;
  logFile: string;
}

async function stageRunner(stage: string): Promise<Runner> {
  await mkdir(logDir(), { recursive: true });
  const logFile = join(logDir(), `image-build-${stage}.log`);
  await writeFile(logFile, '');
  const fail = (reason: string) => {
    const oneLine = reason
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean)
      .join(' ');
    return new StageFailure(`${oneLine} (full log: ${logFile})`);
  };
  return {
    logFile,
    fail,
    async run(command, args, options = {}) {
      await writeFile(logFile, `$ ${command} ${args.join(' ')}\n`, { flag: 'a' });
      const result = await execa(command, args, {
        cwd: options.cwd,
        env: { ...options.env },
        extendEnv: true,
        reject: false,
        stdout: 'pipe',
        stderr: ['pipe', { file: logFile, append: true }],
        stdin: 'ignore',
      });
      if (result.stdout) await writeFile(logFile, `${result.stdout}\n`, { flag: 'a' });
      const failed = result.exitCode !== 0 || result.failed;
      if (failed && !options.allowFailure) {
        const lines = (await readFile(logFile, 'utf8')).trim().split('\n');
        throw fail(lines.filter((l) => l.trim() !== '').at(-1) ?? result.shortMessage ?? 'failed');
      }
      return { stdout: result.stdout, failed };
    },
  };
}

async function requireCommand(command: string, hint: string): Promise<void> {
  const result = await execa('sh', ['-c', `command -v ${command}`], { reject: false });
  if (result.exitCode !== 0) throw new VindError(`${command} is not installed: ${hint}`);
}

const GO_ENV = { GOFLAGS: '-mod=mod', GOWORK: 'off' };

interface ModuleInfo {
  Dir: string;
  GoMod: string;
  Version: string;
  Time?: string;
}

async function downloadModule(runner: Runner, module: string, version: string): Promise<ModuleInfo> {
  const { stdout, failed } = await runner.run('go', ['mod', 'download', '-json', `${module}@${version}`], {
    cwd: tmpdir(),
    env: GO_ENV,
    allowFailure: true,
  });
  let info: ModuleInfo & { Error?: string; Info?: string };
  try {
    info = JSON.parse(stdout) as typeof info;
  } catch {
    throw runner.fail(`go mod download ${module}@${version} failed`);
  }
  // go reports a missing version or an unreachable proxy in the JSON, not on stderr.
  if (info.Error || failed) throw runner.fail(info.Error ?? `go mod download ${module}@${version} failed`);
  if (info.Info && existsSync(info.Info)) {
    const meta = JSON.parse(await readFile(info.Info, 'utf8')) as { Time?: string };
    info.Time = meta.Time;
  }
  return info;
}

/** A folder of compiled binaries, complete only when its stamp matches the build key. */
async function cachedBinaries(
  name: string,
  buildKey: string,
  build: (outDir: string) => Promise<void>,
): Promise<{ dir: string; cached: boolean }> {
  const dir = join(cacheDir(), 'bin', name);
  const stamp = join(dir, '.build-key');
  if (existsSync(stamp) && (await readFile(stamp, 'utf8')) === buildKey) return { dir, cached: true };
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await build(dir);
  await writeFile(stamp, buildKey);
  return { dir, cached: false };
}

async function goVersion(): Promise<string> {
  return (await execa('go', ['env', 'GOVERSION'])).stdout.trim();
}

type Note = (text: string) => void;

async function compileKubernetes(version: KubernetesVersion, go: string, note: Note): Promise<string> {
  const runner = await stageRunner('kubernetes');
  const buildKey = JSON.stringify({ version: version.tag, go, components: KUBERNETES_COMPONENTS });
  const { dir, cached } = await cachedBinaries(`kubernetes-${version.tag}`, buildKey, async (outDir) => {
    const module = await downloadModule(runner, 'k8s.io/kubernetes', version.tag);
    const kubernetesGoMod = await readFile(module.GoMod, 'utf8');
    const work = join(cacheDir(), 'build', `kubernetes-${version.tag}`);
    await rm(work, { recursive: true, force: true });
    await mkdir(work, { recursive: true });
    await writeFile(join(work, 'go.mod'), wrapperGoMod(version, kubernetesGoMod));
    await writeFile(join(work, 'tools.go'), wrapperToolsGo(KUBERNETES_COMPONENTS));
    await runner.run('go', ['mod', 'tidy'], { cwd: work, env: GO_ENV });
    const buildDate = module.Time ?? '1970-01-01T00:00:00Z';
    const ldflags = ['-s', '-w', ...versionLdflags(version, 'unknown', buildDate)].join(' ');
    await runner.run(
      'go',
      [
        'build',
        '-trimpath',
        '-ldflags',
        ldflags,
        '-o',
        `${outDir}/`,
        ...KUBERNETES_COMPONENTS.map((c) => `k8s.io/kubernetes/cmd/${c}`),
      ],
      { cwd: work, env: { ...GO_ENV, CGO_ENABLED: '0' } },
    );
  });
  if (cached) note('cached');
  return dir;
}

async function compileGoTool(tool: GoTool, go: string, note: Note): Promise<string> {
  const runner = await stageRunner(tool.name);
  const buildKey = JSON.stringify({ tool, go });
  const { dir, cached } = await cachedBinaries(`${tool.name}-${tool.version}`, buildKey, async (outDir) => {
    // Built inside the module's own folder, so its own go.mod, go.sum and replace directives apply:
    // the dependency versions its authors tested, not ones raised by a shared build module.
    const module = await downloadModule(runner, tool.module, tool.version);
    const ldflags = [
      '-s',
      '-w',
      ...tool.versionFlags.map((f) => f.replaceAll('{version}', tool.version)),
      ...tool.extraLdflags,
    ].join(' ');
    const args = ['build', '-trimpath', '-ldflags', ldflags];
    if (tool.tags.length > 0) args.push('-tags', tool.tags.join(' '));
    if (tool.packages.length === 1) {
      args.push('-o', join(outDir, tool.name), tool.packages[0]!);
    } else {
      args.push('-o', `${outDir}/`, ...tool.packages);
    }
    await runner.run('go', args, {
      cwd: module.Dir,
      env: { GOWORK: 'off', GOFLAGS: '-mod=readonly', CGO_ENABLED: tool.cgo ? '1' : '0' },
    });
  });
  if (cached) note('cached');
  return dir;
}

async function compilePause(note: Note): Promise<string> {
  const runner = await stageRunner('pause');
  const source = join(PROJECT_ROOT, 'images', 'pause', 'pause.c');
  const sourceText = await readFile(source, 'utf8');
  const { dir, cached } = await cachedBinaries(
    'pause',
    inputsHash({ source: sourceText }),
    async (outDir) => {
      await runner.run('gcc', ['-static', '-Os', '-s', '-o', join(outDir, 'pause'), source]);
    },
  );
  if (cached) note('cached');
  return join(dir, 'pause');
}

/** The node-agent and its dependencies as one ES module, for the Node.js runtime of the image. */
export async function bundleNodeAgent(): Promise<string> {
  const result = await esbuild.build({
    entryPoints: [join(PROJECT_ROOT, 'node-agent', 'main.ts')],
    bundle: true,
    platform: 'node',
    target: 'node18',
    format: 'esm',
    write: false,
    legalComments: 'none',
    banner: {
      js: "import { createRequire as __vindRequire } from 'node:module'; const require = __vindRequire(import.meta.url);",
    },
    logLevel: 'silent',
  });
  return result.outputFiles[0]!.text;
}

function baseImageReference(): string {
  const hash = inputsHash({
    suite: DEBIAN_SUITE,
    packages: DEBIAN_PACKAGES.join(','),
    removals: ROOTFS_REMOVALS.join(','),
    cni: CNI_PLUGINS_KEPT.join(','),
  });
  return `${BASE_IMAGE_REPOSITORY}:${DEBIAN_SUITE}-${shortHash(hash)}`;
}

async function ensureBaseImage(reference: string, reporter: Reporter): Promise<void> {
  if (await inspectImage(reference)) return;
  await reporter.step(`debootstrap Debian ${DEBIAN_SUITE} base (${reference})`, async () => {
    if (process.getuid?.() !== 0) {
      throw new VindError('building the base root file system needs root (debootstrap): run it with sudo');
    }
    await requireCommand('debootstrap', 'install it with `sudo apt-get install debootstrap`');
    const runner = await stageRunner('base');
    await mkdir(join(cacheDir(), 'tmp'), { recursive: true });
    const root = await mkdtemp(join(cacheDir(), 'tmp', 'rootfs-'));
    try {
      const mirror = process.env.VIND_DEBIAN_MIRROR ?? 'http://deb.debian.org/debian';
      await runner.run('debootstrap', [
        '--variant=minbase',
        `--include=${DEBIAN_PACKAGES.join(',')}`,
        DEBIAN_SUITE,
        root,
        mirror,
      ]);
      for (const path of ROOTFS_REMOVALS) await rm(join(root, path), { recursive: true, force: true });
      // apt inside a node still works: it needs these folders to exist.
      await mkdir(join(root, 'var/lib/apt/lists/partial'), { recursive: true });
      await mkdir(join(root, 'var/cache/apt/archives/partial'), { recursive: true });
      const cniDir = join(root, 'usr/lib/cni');
      for (const plugin of await readdir(cniDir)) {
        if (!CNI_PLUGINS_KEPT.includes(plugin)) await rm(join(cniDir, plugin), { force: true });
      }
      const tarProcess = execa('tar', ['--numeric-owner', '-C', root, '-cf', '-', '.'], {
        stdout: 'pipe',
        reject: true,
        stderr: { file: runner.logFile, append: true },
        buffer: false,
      });
      const imported = importRootfs(tarProcess.stdout, reference, [
        'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        'CMD ["/bin/bash"]',
      ]);
      const [packError, importError] = await Promise.all([
        tarProcess.then(
          () => undefined,
          (error: Error) => error,
        ),
        imported.then(
          () => undefined,
          (error: Error) => error,
        ),
      ]);
      if (packError || importError) {
        // Docker tags an import as it reads it: an interrupted stream must not stay as the base.
        await removeImage(reference);
        const reason = (importError ?? packError)!.message.split('\n')[0];
        throw new StageFailure(`importing ${reference}: ${reason} (full log: ${runner.logFile})`);
      }
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
}

export async function buildNodeImage(options: ImageBuildOptions): Promise<ImageBuildResult> {
  const { reporter } = options;
  const version = parseVersionOption(options.kubernetesVersion);
  const reference = nodeImageReference(version.tag);
  await ensureDockerReachable();
  await requireCommand('go', 'install Go 1.24 or later (https://go.dev/doc/install) to build the node image');

  const agentBundle = await reporter.step('bundle node-agent', bundleNodeAgent);
  const go = await goVersion();
  const baseImage = baseImageReference();
  const dockerfile = nodeDockerfile(baseImage);
  const pauseSource = await readFile(join(PROJECT_ROOT, 'images', 'pause', 'pause.c'), 'utf8');
  const hash = inputsHash({
    kubernetes: version.tag,
    tools: JSON.stringify(GO_TOOLS),
    components: KUBERNETES_COMPONENTS.join(','),
    images: `${PAUSE_IMAGE},${COREDNS_IMAGE}`,
    dockerfile,
    pause: pauseSource,
    agent: agentBundle,
    go,
  });

  const existing = await inspectImage(reference);
  if (!options.force && existing?.Config?.Labels?.[LABEL_INPUTS_HASH] === hash) {
    reporter.info(`${reference} is up to date (inputs ${shortHash(hash)})`);
    return { reference, skipped: true, inputsHash: hash };
  }

  // The module proxy is asked first: a wrong version or an unreachable proxy fails in seconds.
  await reporter.step(`resolve k8s.io/kubernetes ${version.tag}`, async () => {
    const runner = await stageRunner('resolve');
    await downloadModule(runner, 'k8s.io/kubernetes', version.tag);
  });
  await requireCommand('gcc', 'install it with `sudo apt-get install build-essential libseccomp-dev`');

  await ensureBaseImage(baseImage, reporter);
  const kubernetesDir = await reporter.step(`compile Kubernetes ${version.tag}`, (note) =>
    compileKubernetes(version, go, note),
  );
  const toolDirs: string[] = [];
  for (const tool of GO_TOOLS) {
    toolDirs.push(
      await reporter.step(`compile ${tool.name} ${tool.version}`, (note) => compileGoTool(tool, go, note)),
    );
  }
  const pauseBinary = await reporter.step('compile pause', compilePause);

  const context = await mkdtemp(join(tmpdir(), 'vind-node-image-'));
  try {
    const files = await reporter.step('assemble build context', async () => {
      const files: string[] = [];
      await mkdir(join(context, 'bin'));
      for (const dir of [kubernetesDir, ...toolDirs]) {
        for (const name of await readdir(dir)) {
          if (name.startsWith('.')) continue;
          // CoreDNS runs as a pod, not on the node: it only goes into its image below.
          if (name === 'coredns') continue;
          await copyFile(join(dir, name), join(context, 'bin', name));
          await chmod(join(context, 'bin', name), 0o755);
          files.push(`bin/${name}`);
        }
      }
      await mkdir(join(context, 'images'));
      const pause = await buildDockerArchive({
        reference: PAUSE_IMAGE,
        files: [{ path: 'pause', content: await readFile(pauseBinary), mode: 0o755 }],
        entrypoint: ['/pause'],
        user: '65535:65535',
      });
      await writeFile(join(context, 'images', 'pause.tar'), pause.tar);
      const corednsBinary = join(toolDirs[GO_TOOLS.indexOf(goTool('coredns'))]!, 'coredns');
      const coredns = await buildDockerArchive({
        reference: COREDNS_IMAGE,
        files: [{ path: 'coredns', content: await readFile(corednsBinary), mode: 0o755 }],
        entrypoint: ['/coredns'],
        exposedPorts: ['53/tcp', '53/udp'],
      });
      await writeFile(join(context, 'images', 'coredns.tar'), coredns.tar);
      files.push('images/pause.tar', 'images/coredns.tar');
      await writeFile(join(context, 'node-agent.mjs'), agentBundle);
      await writeFile(join(context, 'Dockerfile'), dockerfile);
      files.push('node-agent.mjs', 'Dockerfile');
      return files;
    });
    await reporter.step(`build ${reference}`, async () => {
      const logFile = join(logDir(), 'image-build-node.log');
      await writeFile(logFile, '');
      try {
        await buildImage(await packDirectory(context, files), {
          tag: reference,
          labels: {
            [LABEL_INPUTS_HASH]: hash,
            [LABEL_KUBERNETES_VERSION]: version.tag,
            [LABEL_VERSION]: VIND_VERSION,
          },
          logFile,
        });
      } catch (error) {
        throw new StageFailure(`docker build: ${(error as Error).message} (full log: ${logFile})`);
      }
    });
  } finally {
    await rm(context, { recursive: true, force: true });
  }
  // The image this build replaced is left without a tag; remove it unless a container still uses it.
  if (existing && existing.Id !== (await inspectImage(reference))?.Id) {
    await removeImage(existing.Id).catch(() => undefined);
  }
  return { reference, skipped: false, inputsHash: hash };
}
