// The cluster's own Docker network: a /24 that overlaps no other network and neither cluster subnet,
// with the address plan of shared/subnets.ts (fixed node addresses, a range kept for LoadBalancers).

import { LABELS, networkName } from '../../../shared/contract.js';
import { VindError } from '../../../shared/errors.js';
import { sleep } from '../../../shared/poll.js';
import { clusterAddressPlan, pickClusterSubnet } from '../../../shared/subnets.js';
import type { Step } from '../pipeline.js';
import type { CreateState } from '../state.js';

export const createNetwork: Step<CreateState> = {
  name: 'create network',
  async run(state, { undo, note, signal }) {
    const { config, runtime } = state;
    const name = networkName(config.name);
    // Two creates at once may pick the same free subnet; Docker refuses the second, which then picks again.
    for (let attempt = 1; ; attempt++) {
      const subnet = pickClusterSubnet([
        ...(await runtime.usedSubnets()),
        config.podSubnet,
        config.serviceSubnet,
      ]);
      const plan = clusterAddressPlan(subnet);
      try {
        await runtime.createNetwork({
          name,
          subnet,
          gateway: plan.gateway,
          ipRange: plan.dynamicRange,
          labels: { [LABELS.cluster]: config.name },
        });
      } catch (error) {
        // Another `vind create` of the same name got there first.
        if (/already exists/i.test((error as Error).message)) {
          throw new VindError(
            `cluster "${config.name}" is being created by another \`vind create\` right now: wait for it, or choose another name`,
          );
        }
        if (attempt < 8 && /overlap/i.test((error as Error).message)) {
          // The other network may not be listed yet: wait for it before picking again.
          await sleep(150 * attempt, signal);
          continue;
        }
        throw error;
      }
      undo(() => runtime.removeNetwork(name));
      state.plan = plan;
      note(subnet);
      return;
    }
  },
};
