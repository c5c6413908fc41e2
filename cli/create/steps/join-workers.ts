// Each worker gets the join information as a file, as soon as the control plane has written it, and
// joins on its own: the kubeadm contract of server, bootstrap token and CA hash. Done when every
// worker's agent reports ready.

import { workerName } from '../../../shared/contract.js';
import type { Step } from '../pipeline.js';
import { type CreateState, need } from '../state.js';
import { waitForNodeAgent } from './start-control-plane.js';

export const joinWorkers: Step<CreateState> = {
  name: (state) => {
    const count = state.config.workers.length;
    return `join ${count} worker${count > 1 ? 's' : ''}`;
  },
  skip: (state) => state.config.workers.length === 0,
  async run(state, context) {
    const { runtime, config } = state;
    await need(state.joinHandedOver, 'the join information handed to the workers');
    await Promise.all(
      config.workers.map((_, index) => waitForNodeAgent(runtime, workerName(config.name, index), context)),
    );
  },
};
