// CRIU in the node image, for sleep mode checkpoint. Bookworm's CRIU (3.17) fails on kernels 6.13 and
// later, and Debian's newer CRIU needs a newer C library than bookworm has. So the pinned CRIU and its
// library dependencies are downloaded from the suite the recipe names (through apt, with a sources
// list of their own that never touches the host's), unpacked side by side into one folder of the
// image, and run with that suite's own dynamic loader and libraries behind a small wrapper. Nothing
// of the bookworm system changes, and nothing but criu uses those libraries.

import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CRIU } from './recipe.js';
import type { Runner } from './stage-runner.js';

const LIBRARY_DIR = 'usr/lib/x86_64-linux-gnu';
const LOADER = `${LIBRARY_DIR}/ld-linux-x86-64.so.2`;

/** What of the unpacked packages criu does not need at run time (documentation, iconv modules, tools). */
export const CRIU_REMOVALS = ['usr/share', `${LIBRARY_DIR}/gconv`, 'usr/bin', 'usr/libexec', 'etc'];

/** Whether a Debian version's upstream part is at least `minimum` (`4.2`): compared number by number. */
export function atLeast(debianVersion: string, minimum: string): boolean {
  const numbers = (text: string) =>
    text
      .replace(/^\d+:/, '')
      .replace(/-[^-]+$/, '')
      .split(/[.~+]/)
      .map((part) => Number.parseInt(part, 10) || 0);
  const have = numbers(debianVersion);
  const want = numbers(minimum);
  for (let i = 0; i < want.length; i++) {
    if ((have[i] ?? 0) !== want[i]) return (have[i] ?? 0) > want[i]!;
  }
  return true;
}

/** The wrapper installed as `criu` on the PATH. */
export function criuWrapper(): string {
  const prefix = CRIU.prefix;
  return [
    '#!/bin/sh',
    `# CRIU ${CRIU.version} from Debian ${CRIU.suite}, run with that suite's own loader and libraries.`,
    `exec ${prefix}/${LOADER} --library-path ${prefix}/${LIBRARY_DIR} ${prefix}/usr/sbin/criu "$@"`,
    '',
  ].join('\n');
}

/** apt's settings for a download of another suite: its own sources, lists, cache and package state. */
export function aptConfig(workDir: string): string {
  const at = (path: string) => join(workDir, path);
  return [
    `Dir::State "${at('state')}";`,
    `Dir::State::Lists "${at('state/lists')}";`,
    `Dir::State::status "${at('state/status')}";`,
    `Dir::Cache "${at('cache')}";`,
    `Dir::Etc::SourceList "${at('sources.list')}";`,
    `Dir::Etc::SourceParts "${at('sources.list.d')}";`,
    `Dir::Etc::Preferences "${at('preferences')}";`,
    `Dir::Etc::PreferencesParts "${at('preferences.d')}";`,
    `Dir::Etc::TrustedParts "${at('trusted.gpg.d')}";`,
    'APT::Architecture "amd64";',
    // The download folder belongs to root; apt's own unprivileged user could not write there.
    'APT::Sandbox::User "root";',
    '',
  ].join('\n');
}

/** `apt-cache` arguments that list the packages and all they depend on to run, recursively. */
export function dependencyClosureArgs(packages: readonly string[]): string[] {
  return [
    'depends',
    '--recurse',
    '--no-recommends',
    '--no-suggests',
    '--no-conflicts',
    '--no-breaks',
    '--no-replaces',
    '--no-enhances',
    ...packages,
  ];
}

/**
 * The packages of `apt-cache depends --recurse`: every line that names a real package. Virtual
 * packages come in angle brackets and are left out (a real one that provides them is listed too).
 */
export function parseDependencyClosure(output: string): string[] {
  const names = output
    .split('\n')
    .filter((line) => line !== '' && !line.startsWith(' ') && !line.startsWith('<'))
    .map((line) => line.trim());
  return [...new Set(names)];
}

/**
 * Downloads CRIU and its library closure from Debian and unpacks it into `<root><prefix>`, with the
 * wrapper at `<root><wrapper>` and the list of packages at `<root><prefix>/PACKAGES`. `keyring` is
 * the Debian archive keyring the downloaded lists are checked against.
 */
export async function unpackCriu(
  runner: Runner,
  root: string,
  workDir: string,
  mirror: string,
  keyring: string,
): Promise<void> {
  for (const dir of ['state/lists/partial', 'cache/archives/partial', 'sources.list.d', 'preferences.d']) {
    await mkdir(join(workDir, dir), { recursive: true });
  }
  await mkdir(join(workDir, 'trusted.gpg.d'), { recursive: true });
  await writeFile(join(workDir, 'state/status'), '');
  await writeFile(join(workDir, 'sources.list'), `deb [signed-by=${keyring}] ${mirror} ${CRIU.suite} main\n`);
  const config = join(workDir, 'apt.conf');
  await writeFile(config, aptConfig(workDir));
  const apt = (command: string, args: string[], options: { cwd?: string; allowFailure?: boolean } = {}) =>
    runner.run(command, ['-c', config, ...args], options);

  await apt('apt-get', ['update']);
  const debs = join(workDir, 'debs');
  await mkdir(debs, { recursive: true });
  // The pinned version first. A testing suite moves on: then its current criu, if it is still new
  // enough, and a version that is not is named as such.
  let pinned = `criu=${CRIU.version}`;
  const criu = await apt('apt-get', ['download', pinned], { cwd: debs, allowFailure: true });
  if (criu.failed) {
    const { stdout: shown } = await apt('apt-cache', ['show', '--no-all-versions', 'criu'], {
      allowFailure: true,
    });
    const current = /^Version: (\S+)/m.exec(shown)?.[1];
    if (!current || !atLeast(current, CRIU.minimum)) {
      throw runner.fail(
        `criu ${CRIU.version} is not in Debian ${CRIU.suite} (any more), nor a ${CRIU.minimum} or later: set CRIU in images/recipe.ts to a suite and version that has it`,
      );
    }
    pinned = `criu=${current}`;
    await apt('apt-get', ['download', pinned], { cwd: debs });
  }
  const { stdout } = await apt('apt-cache', dependencyClosureArgs([pinned]));
  const libraries = parseDependencyClosure(stdout).filter((name) => name !== 'criu');
  if (libraries.length === 0) throw runner.fail(`apt-cache found no dependencies of ${pinned}`);
  await apt('apt-get', ['download', ...libraries], { cwd: debs });

  const prefix = join(root, CRIU.prefix);
  await rm(prefix, { recursive: true, force: true });
  await mkdir(prefix, { recursive: true });
  const files = (await readdir(debs)).filter((f) => f.endsWith('.deb')).sort();
  const packages: string[] = [];
  for (const file of files) {
    await runner.run('dpkg-deb', ['-x', join(debs, file), prefix]);
    const { stdout: fields } = await runner.run('dpkg-deb', ['-f', join(debs, file), 'Package', 'Version']);
    const [name, version] = fields.split('\n').map((line) => line.replace(/^[^:]+:\s*/, '').trim());
    packages.push(`${name}=${version}`);
  }
  for (const path of CRIU_REMOVALS) await rm(join(prefix, path), { recursive: true, force: true });
  await writeFile(join(prefix, 'PACKAGES'), `${packages.join('\n')}\n`);
  for (const needed of ['usr/sbin/criu', LOADER]) {
    if (!existsSync(join(prefix, needed))) throw runner.fail(`${needed} is missing from the CRIU packages`);
  }
  const wrapper = join(root, CRIU.wrapper);
  await mkdir(join(wrapper, '..'), { recursive: true });
  await writeFile(wrapper, criuWrapper());
  await chmod(wrapper, 0o755);
  // It runs here as it will in a node: the loader, the libraries and criu belong together.
  const { stdout: version } = await runner.run(join(prefix, LOADER), [
    '--library-path',
    join(prefix, LIBRARY_DIR),
    join(prefix, 'usr/sbin/criu'),
    '--version',
  ]);
  const upstream = pinned.slice('criu='.length).replace(/-[^-]+$/, '');
  if (!version.includes(`Version: ${upstream}`)) {
    throw runner.fail(`criu --version said "${version.trim()}", expected ${upstream}`);
  }
}
