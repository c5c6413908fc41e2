// Each worker gets the join information as a file, as soon as the control plane has written it, and
// joins on its own: the kubeadm contract of server, bootstrap token and CA hash. Done when every
// worker's agent reports ready.

import { workerName } from '../../../shared/contract.js';
import type { Step } from '../pipeline.js';
import { type CreateState, need } from '../state.js';
import { handJoinToWorkers, waitForNodeAgent } from './start-control-plane.js';

export const joinWorkers: Step<CreateState> = {
  name: (state) => {
    const count = state.config.workers.length;
    return `join ${count} worker${count > 1 ? 's' : ''}`;
  },
  skip: (state) => state.config.workers.length === 0,
  async run(state, context) {
    const { runtime, config } = state;
    const join = need(state.join, 'the join information');
    await (state.joinHandedOver ??
      handJoinToWorkers(
        state,
        JSON.stringify({ server: join.server, token: join.token, caCertHash: join.caCertHash }),
      ));
    await Promise.all(
      config.workers.map((_, index) => waitForNodeAgent(runtime, workerName(config.name, index), context)),
    );
  },
};
