// Compiling what the node image runs: Kubernetes from a wrapper module over k8s.io/kubernetes, each
// Go tool inside its own module folder, and the static pause binary. Every result is cached per tool
// and version under a stamp of its build key, so an unchanged input is never compiled twice.

import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { inputsHash } from './inputs.js';
import { KUBERNETES_PATCHES, writePatchedModules } from './kubernetes-patches.js';
import { type KubernetesVersion, versionLdflags, wrapperGoMod, wrapperToolsGo } from './kubernetes-module.js';
import { PROJECT_ROOT } from './project-root.js';
import { type GoTool, KUBERNETES_COMPONENTS } from './recipe.js';
import { type Runner, stageRunner } from './stage-runner.js';

const GO_ENV = { GOFLAGS: '-mod=mod', GOWORK: 'off' };

interface ModuleInfo {
  Dir: string;
  GoMod: string;
  Version: string;
  Time?: string;
}

export async function downloadModule(runner: Runner, module: string, version: string): Promise<ModuleInfo> {
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
export async function cachedBinaries(
  cacheDir: string,
  name: string,
  buildKey: string,
  build: (outDir: string) => Promise<void>,
): Promise<{ dir: string; cached: boolean }> {
  const dir = join(cacheDir, 'bin', name);
  const stamp = join(dir, '.build-key');
  if (existsSync(stamp) && (await readFile(stamp, 'utf8')) === buildKey) return { dir, cached: true };
  await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  await build(dir);
  await writeFile(stamp, buildKey);
  return { dir, cached: false };
}

export async function goVersion(): Promise<string> {
  return (await execa('go', ['env', 'GOVERSION'])).stdout.trim();
}

export type Note = (text: string) => void;

/** Where compiled binaries, build folders and logs go. */
export interface BuildDirs {
  cacheDir: string;
  logDir: string;
}

export async function compileKubernetes(
  dirs: BuildDirs,
  version: KubernetesVersion,
  go: string,
  note: Note,
): Promise<string> {
  const runner = await stageRunner(dirs.logDir, 'kubernetes');
  const buildKey = JSON.stringify({
    version: version.tag,
    go,
    components: KUBERNETES_COMPONENTS,
    patches: KUBERNETES_PATCHES,
  });
  const { dir, cached } = await cachedBinaries(
    dirs.cacheDir,
    `kubernetes-${version.tag}`,
    buildKey,
    async (outDir) => {
      const module = await downloadModule(runner, 'k8s.io/kubernetes', version.tag);
      const kubernetesGoMod = await readFile(module.GoMod, 'utf8');
      const work = join(dirs.cacheDir, 'build', `kubernetes-${version.tag}`);
      await rm(work, { recursive: true, force: true });
      await mkdir(work, { recursive: true });
      await writeFile(join(work, 'go.mod'), wrapperGoMod(version, kubernetesGoMod));
      await writeFile(join(work, 'tools.go'), wrapperToolsGo(KUBERNETES_COMPONENTS));
      await runner.run('go', ['mod', 'tidy'], { cwd: work, env: GO_ENV });
      // Patched copies of the modules that hold the start-up patches replace upstream's in the build.
      const patches = await writePatchedModules(join(work, 'patched'), KUBERNETES_PATCHES, {
        dir: async (m) => {
          const { stdout } = await runner.run('go', ['list', '-m', '-json', m], { cwd: work, env: GO_ENV });
          return (JSON.parse(stdout) as { Dir: string }).Dir;
        },
        copy: async (from, to) => {
          // Hard links cost no space; another file system than the module cache's needs a real copy.
          const linked = await runner.run('cp', ['-al', from, to], { allowFailure: true });
          if (linked.failed) {
            await rm(to, { recursive: true, force: true });
            await runner.run('cp', ['-a', from, to]);
          }
          // The module cache's folders are read-only; the copy's must not be, or the next build cannot
          // remove it. Folders only: the files are links to the module cache's own.
          await runner.run('find', [to, '-type', 'd', '-exec', 'chmod', 'u+w', '{}', '+']);
        },
      });
      await writeFile(join(work, 'go.mod'), wrapperGoMod(version, kubernetesGoMod, patches.replacements));
      const leftOut = patches.skipped.length > 0 ? `; left out: ${patches.skipped.join(', ')}` : '';
      note(`${patches.applied.length} start-up patches${leftOut}`);
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
    },
  );
  if (cached) note('cached');
  return dir;
}

export async function compileGoTool(dirs: BuildDirs, tool: GoTool, go: string, note: Note): Promise<string> {
  const runner = await stageRunner(dirs.logDir, tool.name);
  const buildKey = JSON.stringify({ tool, go });
  const { dir, cached } = await cachedBinaries(
    dirs.cacheDir,
    `${tool.name}-${tool.version}`,
    buildKey,
    async (outDir) => {
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
    },
  );
  if (cached) note('cached');
  return dir;
}

export async function compilePause(dirs: BuildDirs, note: Note): Promise<string> {
  const runner = await stageRunner(dirs.logDir, 'pause');
  const source = join(PROJECT_ROOT, 'images', 'pause', 'pause.c');
  const sourceText = await readFile(source, 'utf8');
  const { dir, cached } = await cachedBinaries(
    dirs.cacheDir,
    'pause',
    inputsHash({ source: sourceText }),
    async (outDir) => {
      await runner.run('gcc', ['-static', '-Os', '-s', '-o', join(outDir, 'pause'), source]);
    },
  );
  if (cached) note('cached');
  return join(dir, 'pause');
}
