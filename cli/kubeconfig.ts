// The user's kubeconfig: a cluster's entries are merged in on create and removed on delete, as kind does.
// The file is edited as a YAML document, so comments and entries of other clusters stay as they were.

import { mkdir, open, readFile, realpath, unlink } from 'node:fs/promises';
import { homedir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { type Document, isMap, isScalar, isSeq, parseDocument, YAMLSeq } from 'yaml';
import { writeFileAtomic } from '../shared/atomic-write.js';
import { VindError } from '../shared/errors.js';
import { PermanentError, poll, PollTimeoutError } from '../shared/poll.js';
import {
  type ClusterCredentials,
  KUBECONFIG_SECTIONS,
  kubeconfigEntries,
  type KubeconfigSection,
  renderKubeconfig,
  KUBECONFIG_YAML_OPTIONS,
} from '../shared/kubeconfig.js';

/** First entry of $KUBECONFIG, else ~/.kube/config: the file kubectl writes to as well. */
export function kubeconfigPath(env: NodeJS.ProcessEnv = process.env): string {
  const first = (env.KUBECONFIG ?? '').split(delimiter).find((entry) => entry !== '');
  if (first) return first;
  return join(env.HOME || homedir(), '.kube', 'config');
}

function parseKubeconfig(text: string): Document {
  const doc = parseDocument(text);
  const error = doc.errors[0];
  if (error) {
    const line = error.linePos?.[0]?.line;
    const reason = (error.message.split('\n')[0] ?? '').replace(/ at line \d+, column \d+:?$/, '');
    throw new VindError(
      `kubeconfig is not valid YAML${line === undefined ? '' : ` (line ${line})`}: ${reason}`,
    );
  }
  if (doc.contents !== null && !isMap(doc.contents)) throw new VindError('kubeconfig is not a YAML mapping');
  return doc;
}

/** The section's sequence, created when absent or null so entries can be appended. */
function section(doc: Document, key: KubeconfigSection, create: boolean): YAMLSeq | undefined {
  const node = doc.get(key, true);
  if (isSeq(node)) return node;
  if (node !== undefined && !(isScalar(node) && node.value === null)) {
    throw new VindError(`kubeconfig field ${key} is not a list`);
  }
  if (!create) return undefined;
  const seq = new YAMLSeq();
  doc.set(key, seq);
  return seq;
}

function entryName(item: unknown): unknown {
  return isMap(item) ? item.get('name') : undefined;
}

export function mergeKubeconfigText(existing: string | undefined, creds: ClusterCredentials): string {
  const doc = existing === undefined ? undefined : parseKubeconfig(existing);
  if (!doc || doc.contents === null) return renderKubeconfig(creds);
  if (!doc.has('apiVersion')) doc.set('apiVersion', 'v1');
  if (!doc.has('kind')) doc.set('kind', 'Config');
  const entry = kubeconfigEntries(creds);
  for (const key of KUBECONFIG_SECTIONS) {
    const seq = section(doc, key, true) as YAMLSeq;
    // An empty flow list (`clusters: []`) would otherwise stay in flow style with the new entry inside.
    if (seq.items.length === 0) seq.flow = false;
    const node = doc.createNode(entry[key]);
    const index = seq.items.findIndex((item) => entryName(item) === creds.contextName);
    if (index < 0) {
      seq.items.push(node);
    } else {
      // Replace in place, keeping the order, and drop any further entries of the same name.
      seq.items[index] = node;
      seq.items = seq.items.filter((item, i) => i <= index || entryName(item) !== creds.contextName);
    }
  }
  doc.set('current-context', creds.contextName);
  return doc.toString(KUBECONFIG_YAML_OPTIONS);
}

function removeEntries(existing: string, contextName: string): { text: string; removed: boolean } {
  const doc = parseKubeconfig(existing);
  if (doc.contents === null) return { text: existing, removed: false };
  let removed = false;
  for (const key of KUBECONFIG_SECTIONS) {
    const seq = section(doc, key, false);
    if (!seq) continue;
    const kept = seq.items.filter((item) => entryName(item) !== contextName);
    if (kept.length !== seq.items.length) {
      seq.items = kept;
      removed = true;
    }
  }
  if (doc.get('current-context') === contextName) {
    doc.set('current-context', '');
    removed = true;
  }
  return { text: removed ? doc.toString(KUBECONFIG_YAML_OPTIONS) : existing, removed };
}

export function removeFromKubeconfigText(existing: string, contextName: string): string {
  return removeEntries(existing, contextName).text;
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** A symlinked kubeconfig (e.g. into a dotfiles repository) is updated where it points, not replaced. */
async function resolveTarget(path: string): Promise<string> {
  try {
    return await realpath(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return path;
    throw error;
  }
}

/** A crash leaves the old file; the file stays readable by its owner only. */
function writeAtomically(path: string, text: string): Promise<void> {
  return writeFileAtomic(path, text, { mode: 0o600, sync: true });
}

const LOCK_WAIT_MS = 5000;

/**
 * kubectl guards kubeconfig writes with `<file>.lock`; taking the same lock keeps a concurrent
 * `vind create` or `kubectl config` from losing our entries (or us theirs).
 */
async function withLock<T>(path: string, action: () => Promise<T>): Promise<T> {
  const lock = `${path}.lock`;
  try {
    await poll(
      `the kubeconfig lock ${lock}`,
      async () => {
        try {
          await (await open(lock, 'wx', 0o600)).close();
          return true;
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code === 'EEXIST') return undefined;
          throw new PermanentError((error as Error).message);
        }
      },
      { timeoutMs: LOCK_WAIT_MS, intervalMs: 100 },
    );
  } catch (error) {
    if (!(error instanceof PollTimeoutError)) throw error;
    throw new VindError(
      `kubeconfig ${path} is locked by ${lock}: if no kubectl or vind is running, remove that file and try again`,
    );
  }
  try {
    return await action();
  } finally {
    await unlink(lock).catch(() => undefined);
  }
}

export async function mergeIntoKubeconfigFile(path: string, creds: ClusterCredentials): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const target = await resolveTarget(path);
  await withLock(target, async () => {
    const existing = await readIfExists(target);
    await writeAtomically(target, mergeKubeconfigText(existing, creds));
  });
}

/** Returns whether anything was removed; a missing file means there was nothing to remove. */
export async function removeFromKubeconfigFile(path: string, contextName: string): Promise<boolean> {
  const target = await resolveTarget(path);
  if ((await readIfExists(target)) === undefined) return false;
  return withLock(target, async () => {
    const existing = await readIfExists(target);
    if (existing === undefined) return false;
    const { text, removed } = removeEntries(existing, contextName);
    if (removed) await writeAtomically(target, text);
    return removed;
  });
}
