// Readiness as the user meets it, through the published port: the API answers, every worker is
// Ready, CoreDNS is available. With `--wait 0` only the first. With `networking.cni: none` no node
// can be Ready (nor CoreDNS run) before the user installs a CNI: every worker's kubelet reporting,
// NotReady, is as far as a create can go.

import { renderKubeconfig } from '../../../shared/kubeconfig.js';
import { type KubeTarget, targetFromKubeconfig } from '../../../shared/kubernetes.js';
import type { Step } from '../pipeline.js';
import { type CreateState, need, waitWithin } from '../state.js';

function target(state: CreateState): KubeTarget {
  return targetFromKubeconfig(renderKubeconfig(need(state.credentials, 'the credentials')));
}

const waitsForWorkers = (state: CreateState) => !state.waitForReady || state.config.workers.length === 0;
const noCni = (state: CreateState) => state.config.cni === 'none';
const nodes = (count: number) => `${count} node${count > 1 ? 's' : ''}`;

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
  skip: (state) => waitsForWorkers(state) || noCni(state),
  async run(state, context) {
    const api = target(state);
    const count = state.config.workers.length;
    await waitWithin(
      `${nodes(count)} to be Ready`,
      async () => ((await state.readiness.readyNodes(api)) >= count ? true : undefined),
      context,
      500,
    );
  },
};

export const waitForNodesReporting: Step<CreateState> = {
  name: 'wait for nodes to report',
  skip: (state) => waitsForWorkers(state) || !noCni(state),
  async run(state, context) {
    const api = target(state);
    const count = state.config.workers.length;
    await waitWithin(
      `${nodes(count)} to report their status`,
      async () => ((await state.readiness.reportingNodes(api)) >= count ? true : undefined),
      context,
      500,
    );
    context.note('NotReady until a CNI is installed');
  },
};

export const waitForCoreDns: Step<CreateState> = {
  name: 'wait for CoreDNS',
  skip: (state) => waitsForWorkers(state) || noCni(state),
  async run(state, context) {
    const api = target(state);
    await waitWithin(
      'CoreDNS to be available',
      async () => ((await state.readiness.coreDnsAvailable(api)) ? true : undefined),
      context,
      // The last wait of a create: every tenth of a second it is looked at sooner counts.
      100,
    );
  },
};
