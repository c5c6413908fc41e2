// The control plane's agent writes its join information first, then reports ready once the API
// server answers and the bootstrap objects exist. The join information goes to the workers the moment
// it appears, so that they join while the control plane is still starting; at ready, the admin
// credentials are read out of the container.

import {
  ADMIN_KUBECONFIG,
  controlPlaneName,
  JOIN_FILE,
  parseJoinInfo,
  parseNodeStatus,
  STATUS_FILE,
  STATUS_REASONS,
  workerName,
} from '../../../shared/contract.js';
import { InterruptedError, VindError } from '../../../shared/errors.js';
import { sleep } from '../../../shared/poll.js';
import type { ContainerRuntime } from '../../runtime/runtime.js';
import type { Step, StepContext } from '../pipeline.js';
import { type CreateState, timedOut } from '../state.js';
import { startSideContainers } from './start-containers.js';

/** A node's agent is done starting, one way or the other. */
const FINAL_PHASES = ['"phase":"ready"', '"phase":"failed"'];

/** Another file of the node to hear about while waiting for its agent. */
export interface AlsoFollow {
  path: string;
  onChange(content: string): void;
}

/**
 * Waits for a node's agent to report ready, following its status file as it changes; a failed node
 * or an exited container ends the wait at once.
 */
export async function waitForNodeAgent(
  runtime: ContainerRuntime,
  container: string,
  context: StepContext,
  also?: AlsoFollow,
): Promise<void> {
  const what = `${container} to start`;
  const paths = [STATUS_FILE, ...(also ? [also.path] : [])];
  let last: string | undefined;
  for (;;) {
    const remaining = context.deadline - Date.now();
    if (remaining <= 0) throw timedOut(what, last);
    const changes = runtime.followFiles(container, paths, {
      endWhenFirstHas: FINAL_PHASES,
      timeoutMs: remaining,
      signal: context.signal,
    });
    for await (const change of changes) {
      if (change.path !== STATUS_FILE) {
        if (change.content) also?.onChange(change.content);
        continue;
      }
      const status = parseNodeStatus(change.content);
      if (status?.phase === 'failed') throw new VindError(`${container}: ${status.message}`);
      if (status?.phase === 'ready') return;
      // A datastore that does not answer at create is a mistake in --datastore, not a wait.
      if (status?.phase === 'retrying' && status.reason === STATUS_REASONS.datastoreUnreachable) {
        throw new VindError(`${container}: ${status.message.replace(/; trying again in .*$/, '')}`);
      }
      // Not yet, and why: the agent tries again by itself; the reason is named if time runs out.
      if (status?.phase === 'retrying') last = status.message;
    }
    if (context.signal.aborted) throw new InterruptedError();
    const info = await runtime.inspectContainer(container);
    if (!info || info.state !== 'running') {
      throw new VindError(
        `${container} exited (code ${info?.exitCode ?? 'unknown'}); see \`docker logs ${container}\``,
      );
    }
    // The follower reached its time limit, or the engine cut it off: look again.
    await sleep(200, context.signal);
  }
}

/**
 * Keeps the join information and starts writing it into every worker, each of which joins on its own
 * from then on; the join step awaits the writes.
 */
function handOverJoin(state: CreateState, joinText: string): void {
  const join = parseJoinInfo(joinText);
  state.join = join;
  // The worker needs no expiry: it joins now or not at all.
  const text = JSON.stringify({ server: join.server, token: join.token, caCertHash: join.caCertHash });
  state.joinHandedOver = Promise.all(
    state.config.workers.map((_, index) =>
      state.runtime.writeFile(workerName(state.config.name, index), JOIN_FILE, text),
    ),
  ).then(() => undefined);
  // Until the join step awaits it (a failure before then ends the run anyway), not an unhandled rejection.
  state.joinHandedOver.catch(() => undefined);
}

/**
 * The front door and the image cache, once the nodes have started and the control plane has made its
 * certificates: their start-up is then off the path of both, and done long before the API is.
 */
function startSideContainersOnce(state: CreateState): void {
  if (state.sideContainers) return;
  state.sideContainers = startSideContainers(state);
  // Awaited by the step after this one; until then a failure must not be an unhandled rejection.
  state.sideContainers.catch(() => undefined);
}

export const startControlPlane: Step<CreateState> = {
  name: 'start control plane',
  async run(state, context) {
    const { runtime } = state;
    const container = controlPlaneName(state.config.name);
    await waitForNodeAgent(runtime, container, context, {
      path: JOIN_FILE,
      onChange(content) {
        if (state.join) return;
        handOverJoin(state, content);
        startSideContainersOnce(state);
      },
    });
    const admin = await runtime.readFile(container, ADMIN_KUBECONFIG);
    if (!state.join) {
      const joinText = await runtime.readFile(container, JOIN_FILE);
      if (joinText) handOverJoin(state, joinText);
    }
    if (!state.join || !admin) throw new VindError(`${container} did not write its join information`);
    state.adminKubeconfig = admin;
    startSideContainersOnce(state);
  },
};
