// Start-up waits in Kubernetes that cost a new cluster seconds and nothing else. Each patch only
// shortens how long a component sleeps before it looks again (or before it looks the first time);
// what it checks and what it does are upstream's. A module with a patch is copied into the build
// folder (hard links, the patched files rewritten) and the wrapper module replaces it with that
// copy: the module cache keeps upstream's files, and `go build -overlay` may not touch them. A
// patch whose text a Kubernetes version no longer holds is left out, and the build says so.

import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

export interface SourcePatch {
  /** Short name, shown in the build output when the patch is left out. */
  name: string;
  /** The module that holds the file, as the wrapper module requires it. */
  module: string;
  /** The file inside that module. */
  file: string;
  /** Text that must appear exactly once in the file. */
  find: string;
  replace: string;
}

export const KUBERNETES_PATCHES: readonly SourcePatch[] = [
  {
    // The RBAC bootstrap post-start hook slept 1 s before its first pass, even when every default role
    // already exists (a seeded datastore). /healthz and /readyz wait on this hook.
    name: 'rbac-bootstrap-first-pass-at-once',
    module: 'k8s.io/kubernetes',
    file: 'pkg/registry/rbac/rest/storage_rbac.go',
    find: 'err := wait.Poll(1*time.Second, 30*time.Second, func() (done bool, err error) {',
    replace: 'err := wait.PollImmediate(1*time.Second, 30*time.Second, func() (done bool, err error) {',
  },
  {
    // The same first-pass sleep in the hook that writes the system priority classes.
    name: 'priority-classes-first-pass-at-once',
    module: 'k8s.io/kubernetes',
    file: 'pkg/registry/scheduling/rest/storage_scheduling.go',
    find: 'err := wait.Poll(1*time.Second, 30*time.Second, func() (done bool, err error) {',
    replace: 'err := wait.PollImmediate(1*time.Second, 30*time.Second, func() (done bool, err error) {',
  },
  {
    // The controller manager asks /healthz once a second before it starts any controller; the
    // kubelet's client certificate waits on those controllers.
    name: 'controller-manager-healthz-every-100ms',
    module: 'k8s.io/controller-manager',
    file: 'app/helper.go',
    find: 'err := wait.PollImmediate(time.Second, timeout, func() (bool, error) {',
    replace: 'err := wait.PollImmediate(100*time.Millisecond, timeout, func() (bool, error) {',
  },
  {
    // The kubelet looks once a second whether its node informer has synced before it watches its
    // pods, so pods bound to a new node waited up to a second more.
    name: 'kubelet-pod-watch-after-node-sync-every-100ms',
    module: 'k8s.io/kubernetes',
    file: 'pkg/kubelet/config/apiserver.go',
    find: 'const WaitForAPIServerSyncPeriod = 1 * time.Second',
    replace: 'const WaitForAPIServerSyncPeriod = 100 * time.Millisecond',
  },
];

/** The patched text, or why the patch does not apply. */
export function applyPatch(source: string, patch: SourcePatch): { text: string } | { skipped: string } {
  const first = source.indexOf(patch.find);
  if (first < 0) return { skipped: `${patch.file} no longer holds the text it changes` };
  if (source.indexOf(patch.find, first + 1) >= 0) {
    return { skipped: `${patch.file} holds the text it changes more than once` };
  }
  return { text: source.slice(0, first) + patch.replace + source.slice(first + patch.find.length) };
}

export interface PatchedModules {
  /** Module path -> the folder of its patched copy, for the wrapper module's replace lines. */
  replacements: Record<string, string>;
  applied: string[];
  skipped: string[];
}

export interface ModuleSource {
  /** The folder of a module as the build resolves it (in the module cache). */
  dir(module: string): Promise<string>;
  /**
   * Copies a module folder, e.g. with hard links, into folders of its own that are writable (the module
   * cache's are not): the patched files are replaced in them, and the next build removes them.
   */
  copy(from: string, to: string): Promise<void>;
}

/** Writes a patched copy under `dir` of every module that a patch applies to. */
export async function writePatchedModules(
  dir: string,
  patches: readonly SourcePatch[],
  source: ModuleSource,
): Promise<PatchedModules> {
  // module -> file -> patched text, each file's patches applied in order.
  const texts = new Map<string, Map<string, string>>();
  const applied: string[] = [];
  const skipped: string[] = [];
  const origins = new Map<string, string>();
  for (const patch of patches) {
    if (!origins.has(patch.module)) origins.set(patch.module, await source.dir(patch.module));
    const files = texts.get(patch.module) ?? new Map<string, string>();
    const current =
      files.get(patch.file) ?? (await readFile(join(origins.get(patch.module)!, patch.file), 'utf8'));
    const result = applyPatch(current, patch);
    if ('skipped' in result) {
      skipped.push(`${patch.name} (${result.skipped})`);
      continue;
    }
    files.set(patch.file, result.text);
    texts.set(patch.module, files);
    applied.push(patch.name);
  }

  await rm(dir, { recursive: true, force: true });
  const replacements: Record<string, string> = {};
  for (const [module, files] of texts) {
    const copy = join(dir, module);
    await mkdir(dirname(copy), { recursive: true });
    await source.copy(origins.get(module)!, copy);
    for (const [file, text] of files) {
      const target = join(copy, file);
      // The copy's file may be a link to the module cache's: it is replaced, never written through.
      await rm(target);
      await writeFile(target, text);
    }
    replacements[module] = copy;
  }
  return { replacements, applied, skipped };
}
