// Registry credentials kept by Docker's credential helpers (`credsStore`, `credHelpers` in the user's
// Docker config: a keychain, pass, Docker Desktop). The helpers run on the host only, so the CLI asks
// them, with the protocol the Docker CLI uses (`docker-credential-<name> list` and `get`), and hands
// the answers to the image cache, whose pulls through the host's Docker need them. Credentials in the
// config's own `auths` need no help: the cache reads the config folder itself.

import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';

interface DockerConfigFile {
  credsStore?: string;
  credHelpers?: Record<string, string>;
}

/** An entry as in config.json's `auths`: what the cache turns into X-Registry-Auth. */
export interface AuthEntry {
  username?: string;
  password?: string;
  identitytoken?: string;
}

export function dockerConfigDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.DOCKER_CONFIG ?? join(homedir(), '.docker');
}

/** Which helper answers for which registries: the credsStore for what it lists, credHelpers per registry. */
export function helperAssignments(
  config: DockerConfigFile,
  listed: Record<string, string[]>,
): { helper: string; server: string }[] {
  const assignments = new Map<string, string>();
  if (config.credsStore)
    for (const server of listed[config.credsStore] ?? []) assignments.set(server, config.credsStore);
  for (const [server, helper] of Object.entries(config.credHelpers ?? {})) assignments.set(server, helper);
  return [...assignments].map(([server, helper]) => ({ server, helper }));
}

/** The helper's answer to `get`, as an `auths` entry; "<token>" as user name means an identity token. */
export function authEntry(answer: { Username?: string; Secret?: string }): AuthEntry | undefined {
  if (!answer.Secret) return undefined;
  if (answer.Username === '<token>') return { identitytoken: answer.Secret };
  return { username: answer.Username, password: answer.Secret };
}

async function runHelper(helper: string, verb: 'list' | 'get', input: string): Promise<string | undefined> {
  const result = await execa(`docker-credential-${helper}`, [verb], {
    input,
    reject: false,
    // A helper that wants a passphrase would wait for ever: give up instead.
    timeout: 10_000,
    stdin: 'pipe',
  });
  return result.exitCode === 0 ? result.stdout : undefined;
}

/**
 * Every credential the user's helpers hold, keyed by registry server. A helper that is missing,
 * locked or slow is passed over: pulls of public images need nothing from it.
 */
export async function helperCredentials(configDir = dockerConfigDir()): Promise<Record<string, AuthEntry>> {
  let config: DockerConfigFile;
  try {
    config = JSON.parse(await readFile(join(configDir, 'config.json'), 'utf8')) as DockerConfigFile;
  } catch {
    return {};
  }
  const listed: Record<string, string[]> = {};
  if (config.credsStore) {
    const text = await runHelper(config.credsStore, 'list', '');
    try {
      listed[config.credsStore] = Object.keys(JSON.parse(text ?? '{}') as Record<string, string>);
    } catch {
      listed[config.credsStore] = [];
    }
  }
  const result: Record<string, AuthEntry> = {};
  for (const { helper, server } of helperAssignments(config, listed)) {
    const text = await runHelper(helper, 'get', server);
    if (!text) continue;
    try {
      const entry = authEntry(JSON.parse(text) as { Username?: string; Secret?: string });
      if (entry) result[server] = entry;
    } catch {
      // not JSON: a helper in trouble; pass it over
    }
  }
  return result;
}
