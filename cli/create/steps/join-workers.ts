// Each worker gets the join information as a file and joins on its own: the kubeadm contract of
// server, bootstrap token and CA hash. Done when every worker's agent reports ready.

import { JOIN_FILE, workerName } from '../../../shared/contract.js';
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
    const join = need(state.join, 'the join information');
    // The worker needs no expiry: it joins now or not at all.
    const text = JSON.stringify({ server: join.server, token: join.token, caCertHash: join.caCertHash });
    await Promise.all(
      config.workers.map(async (_, index) => {
        const container = workerName(config.name, index);
        await runtime.writeFile(container, JOIN_FILE, text);
        await waitForNodeAgent(runtime, container, context);
      }),
    );
  },
};
