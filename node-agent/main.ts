// node-agent: the entry point of every node container (under tini, which reaps orphans).
// The container command names the role: `control-plane`, `worker` or `image-cache`; the image cache
// starts its registry as `image-cache-registry`, and a forwarder container per LoadBalancer address
// as `host-port`; each cluster's front door (its API port, wake on demand) runs as `front-door`, and
// the WireGuard hub of a cluster with remote nodes as `hub`. Progress and failures go to /run/vind/status for the CLI, and to stdout for
// `docker logs`. `checkpoint`, run with `docker exec` in a control plane, asks its running agent to
// checkpoint the daemons (sleep mode checkpoint) and prints the report. `image-seed`, run once by
// the image build in a container of the new image, writes the datastore seed (datastore-seed.ts).

import { requestCheckpoint } from './checkpoint.js';
import { runControlPlane } from './control-plane.js';
import { seedDatastore } from './datastore-seed.js';
import { runFrontDoor } from './front-door.js';
import { runHostPort } from './host-port.js';
import { runHub } from './hub.js';
import { imageCacheCommand, runImageCache, runImageCacheRegistry } from './image-cache/main.js';
import { log } from './log.js';
import { SEED } from '../shared/contract.js';
import { isPermanent, ReasonedError, retryDelay, setStatus } from './status.js';
import { Supervisor } from './supervisor.js';
import { runWorker } from './worker.js';

const ROLES = {
  'control-plane': runControlPlane,
  worker: runWorker,
  'image-cache': runImageCache,
  hub: runHub,
} as const;

type Role = keyof typeof ROLES;

async function main(): Promise<void> {
  const role = process.argv[2] ?? 'worker';
  if (role === 'image-cache' && process.argv[3]) {
    await imageCacheCommand(process.argv[3]).then(
      () => process.exit(0),
      (error: Error) => {
        process.stderr.write(`${error.message}\n`);
        process.exit(1);
      },
    );
  }
  if (role === 'checkpoint') {
    await requestCheckpoint().then(
      (report) => {
        process.stdout.write(`${JSON.stringify(report)}\n`);
        process.exit(0);
      },
      (error: Error) => {
        process.stderr.write(`${error.message}\n`);
        process.exit(1);
      },
    );
  }
  if (role === SEED.command) {
    // Run once by the image build in a throw-away container of the new image, which is then committed.
    await seedDatastore().then(
      () => process.exit(0),
      (error: Error) => {
        process.stderr.write(`image seed: ${error.message.split('\n')[0]}\n`);
        process.exit(1);
      },
    );
  }
  if (role === 'image-cache-registry') {
    // An unprivileged child of the image-cache role: no status file to write, no daemons of its own.
    // Failing, it exits, and the role's supervisor starts it again.
    await runImageCacheRegistry().catch((error: Error) => {
      log(`image cache registry: ${error.message}`);
      process.exit(1);
    });
    return;
  }
  if (role === 'host-port') {
    // Made by the image cache, unprivileged: no status file, no daemons. Failing, it exits, and
    // Docker's restart policy starts it again.
    await runHostPort(process.argv.slice(3)).catch((error: Error) => {
      log(`host-port: ${error.message}`);
      process.exit(1);
    });
    return;
  }
  if (role === 'front-door') {
    // Made by the CLI, unprivileged: no status file, no daemons. Failing, it exits, and Docker's
    // restart policy starts it again.
    await runFrontDoor().catch((error: Error) => {
      log(`front door: ${error.message}`);
      process.exit(1);
    });
    return;
  }
  if (!(role in ROLES)) {
    log(`unknown role "${role}": use one of ${Object.keys(ROLES).join(', ')}`);
    process.exit(2);
  }
  const supervisor = new Supervisor();
  let stopping = false;
  let attempt: AbortController | undefined;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping`);
    attempt?.abort();
    void supervisor.stopAll().then(() => process.exit(0));
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  // A failure that may heal (a datastore not up yet after a restart, a podCIDR late) is tried again
  // from the start, with back-off; one that cannot (a refused password, bad settings) is final.
  for (let tries = 0; !stopping; tries++) {
    attempt = new AbortController();
    try {
      await ROLES[role as Role](supervisor, attempt.signal);
      return;
    } catch (error) {
      const message = (error as Error).message.split('\n')[0] ?? String(error);
      if (isPermanent(error)) {
        await setStatus('failed', message).catch(() => undefined);
        // Stay up: the container must not exit and restart, which would wipe the status the CLI
        // reads, and daemons keep running so the failure can be inspected (`docker exec`, `--retain`).
        setInterval(() => undefined, 3_600_000);
        return;
      }
      const delay = retryDelay(tries);
      const reason = error instanceof ReasonedError ? error.reason : undefined;
      await setStatus('retrying', `${message}; trying again in ${delay / 1000}s`, reason).catch(
        () => undefined,
      );
      attempt.abort();
      await supervisor.reset();
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
}

void main();
