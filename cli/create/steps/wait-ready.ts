// Readiness as the user meets it, through the published port: the API answers, every worker is
// Ready, CoreDNS is available. With `--wait 0` only the first.

import { renderKubeconfig } from '../../../shared/kubeconfig.js';
import { type KubeTarget, targetFromKubeconfig } from '../../../shared/kubernetes.js';
import type { Step } from '../pipeline.js';
import { type CreateState, need, waitWithin } from '../state.js';

function target(state: CreateState): KubeTarget {
  return targetFromKubeconfig(renderKubeconfig(need(state.credentials, 'the credentials')));
}

const waitsForWorkers = (state: CreateState) => !state.waitForReady || state.config.workers.length === 0;

export const waitForApiServer: Step<CreateState> = {
  name: 'wait for the API server',
  async run(state, context) {
    const api = target(state);
    await waitWithin(
      'the API server',
      async () => ((await state.readiness.apiReady(api)) ? true : undefined),
      context,
    );
  },
};

export const waitForNodesReady: Step<CreateState> = {
  name: 'wait for nodes Ready',
  skip: waitsForWorkers,
  async run(state, context) {
    const api = target(state);
    const count = state.config.workers.length;
    await waitWithin(
      `${count} node${count > 1 ? 's' : ''} to be Ready`,
      async () => ((await state.readiness.readyNodes(api)) >= count ? true : undefined),
      context,
      500,
    );
  },
};

export const waitForCoreDns: Step<CreateState> = {
  name: 'wait for CoreDNS',
  skip: waitsForWorkers,
  async run(state, context) {
    const api = target(state);
    await waitWithin(
      'CoreDNS to be available',
      async () => ((await state.readiness.coreDnsAvailable(api)) ? true : undefined),
      context,
    );
  },
};
