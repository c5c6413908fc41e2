// The control plane's agent reports ready once the API server answers and the bootstrap objects
// exist; then its join information and admin credentials are read out of the container.

import {
  ADMIN_KUBECONFIG,
  controlPlaneName,
  JOIN_FILE,
  parseJoinInfo,
  parseNodeStatus,
  STATUS_FILE,
  STATUS_REASONS,
} from '../../../shared/contract.js';
import { VindError } from '../../../shared/errors.js';
import { PermanentError } from '../../../shared/poll.js';
import type { ContainerRuntime } from '../../runtime/runtime.js';
import type { Step, StepContext } from '../pipeline.js';
import { type CreateState, waitWithin } from '../state.js';

/** Waits for a node's agent to report ready; a failed node or an exited container ends the wait at once. */
export async function waitForNodeAgent(
  runtime: ContainerRuntime,
  container: string,
  context: StepContext,
): Promise<void> {
  try {
    await waitWithin(
      `${container} to start`,
      async () => {
        const status = parseNodeStatus(await runtime.readFile(container, STATUS_FILE).catch(() => undefined));
        if (status?.phase === 'failed') throw new PermanentError(`${container}: ${status.message}`);
        if (status?.phase === 'ready') return true;
        // A datastore that does not answer at create is a mistake in --datastore, not a wait.
        if (status?.phase === 'retrying' && status.reason === STATUS_REASONS.datastoreUnreachable) {
          throw new PermanentError(`${container}: ${status.message.replace(/; trying again in .*$/, '')}`);
        }
        // Not yet, and why: the agent tries again by itself; the reason is named if time runs out.
        if (status?.phase === 'retrying') throw new Error(status.message);
        const info = await runtime.inspectContainer(container);
        if (!info || info.state !== 'running') {
          throw new PermanentError(
            `${container} exited (code ${info?.exitCode ?? 'unknown'}); see \`docker logs ${container}\``,
          );
        }
        return undefined;
      },
      context,
    );
  } catch (error) {
    if (error instanceof PermanentError) throw new VindError(error.message);
    throw error;
  }
}

export const startControlPlane: Step<CreateState> = {
  name: 'start control plane',
  async run(state, context) {
    const { runtime } = state;
    const container = controlPlaneName(state.config.name);
    await waitForNodeAgent(runtime, container, context);
    const joinText = await runtime.readFile(container, JOIN_FILE);
    const admin = await runtime.readFile(container, ADMIN_KUBECONFIG);
    if (!joinText || !admin) throw new VindError(`${container} did not write its join information`);
    state.join = parseJoinInfo(joinText);
    state.adminKubeconfig = admin;
  },
};
