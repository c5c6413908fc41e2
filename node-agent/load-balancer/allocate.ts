// Which address each LoadBalancer Service gets, and which node announces each address: pure
// functions of what the API holds, so a restarted controller reaches the same answer from the
// Services' status alone.

import { intToIp, ipToInt } from '../../shared/subnets.js';

export interface ServicePort {
  port: number;
  protocol: string;
}

/** A LoadBalancer Service as far as allocation cares. */
export interface BalancedService {
  /** namespace/name */
  key: string;
  /** Ordering among Services that want the same address: the older wins. */
  created: string;
  /** The address the Service asks for (annotation or spec.loadBalancerIP). */
  requested?: string;
  /** The address its status holds now. */
  current?: string;
  ports: ServicePort[];
  /** externalTrafficPolicy: Local; such a Service does not share its address. */
  local: boolean;
}

export type Allocation =
  { address: string } | { pending: string; reason: 'NotInRange' | 'InUse' | 'RangeFull' };

export interface AddressRange {
  first: string;
  last: string;
}

export function rangeText(range: AddressRange): string {
  return `${range.first}-${range.last}`;
}

export function inRange(range: AddressRange, address: string): boolean {
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(address)) return false;
  const n = ipToInt(address);
  return n >= ipToInt(range.first) && n <= ipToInt(range.last);
}

function portText(port: ServicePort): string {
  return `${port.port}/${port.protocol}`;
}

/** Why `service` cannot join the Services already on an address, or undefined when it can. */
function sharingProblem(
  service: BalancedService,
  holders: BalancedService[],
  address: string,
): string | undefined {
  const first = holders[0];
  if (!first) return undefined;
  if (service.local || holders.some((h) => h.local)) {
    return `address ${address} is used by ${first.key}; a Service with externalTrafficPolicy Local keeps its address to itself: pick another address or leave it out`;
  }
  for (const holder of holders) {
    const clash = service.ports.find((p) =>
      holder.ports.some((q) => q.port === p.port && q.protocol === p.protocol),
    );
    if (clash) {
      return `address ${address} is used by ${holder.key} with port ${portText(clash)}: Services share an address only when their ports differ`;
    }
  }
  return undefined;
}

/**
 * Gives every Service an address or a reason to wait. Services keep the address they hold; then
 * those asking for an address get it in order of age when it is in the range and free (or shared
 * without a port in common); the rest take the lowest address no Service uses.
 */
export function allocate(services: BalancedService[], range: AddressRange): Map<string, Allocation> {
  const result = new Map<string, Allocation>();
  const holders = new Map<string, BalancedService[]>();
  const byAge = [...services].sort((a, b) =>
    a.created === b.created ? a.key.localeCompare(b.key) : a.created.localeCompare(b.created),
  );
  const place = (service: BalancedService, address: string) => {
    result.set(service.key, { address });
    holders.set(address, [...(holders.get(address) ?? []), service]);
  };

  // Held addresses stay put: a restart, or a newer Service asking for the same one, moves nothing.
  for (const service of byAge) {
    const { current, requested } = service;
    if (!current || !inRange(range, current) || (requested && requested !== current)) continue;
    if (!sharingProblem(service, holders.get(current) ?? [], current)) place(service, current);
  }
  for (const service of byAge) {
    const { requested } = service;
    if (result.has(service.key) || !requested) continue;
    if (!inRange(range, requested)) {
      result.set(service.key, {
        pending: `the requested address ${requested} is not in this cluster's LoadBalancer range ${rangeText(range)}: ask for an address in the range, or for none`,
        reason: 'NotInRange',
      });
      continue;
    }
    const problem = sharingProblem(service, holders.get(requested) ?? [], requested);
    if (problem) result.set(service.key, { pending: problem, reason: 'InUse' });
    else place(service, requested);
  }
  let next = ipToInt(range.first);
  const last = ipToInt(range.last);
  for (const service of byAge) {
    if (result.has(service.key)) continue;
    while (next <= last && holders.has(intToIp(next))) next += 1;
    if (next > last) {
      result.set(service.key, {
        pending: `every address of this cluster's LoadBalancer range ${rangeText(range)} is in use (${holders.size} addresses): delete a LoadBalancer Service, or share an address by asking for it with ports that differ`,
        reason: 'RangeFull',
      });
      continue;
    }
    place(service, intToIp(next));
  }
  return result;
}

/** What choosing an announcer needs to know of the Services on one address. */
export interface AddressDemand {
  /** Nodes with a ready endpoint of a Local Service on the address; undefined when none is Local. */
  localNodes?: Set<string>;
  /** Nodes with a ready endpoint of any Service on the address: preferred when the address is placed. */
  endpointNodes?: Set<string>;
}

/**
 * One announcing node per address among the healthy ones. An address stays where it is while that
 * node can serve it (moving it would break the connections its node tracks); otherwise it goes to a
 * node with an endpoint of its own if there is one (traffic then takes no second hop), the one with
 * the fewest addresses among those (by name on a tie).
 * A Local Service is announced only from a node with one of its ready endpoints, since the others
 * drop its traffic; without such a node the address is announced nowhere.
 */
export function chooseAnnouncers(
  demands: Map<string, AddressDemand>,
  healthyNodes: string[],
  previous: Map<string, string>,
): Map<string, string> {
  const chosen = new Map<string, string>();
  const load = new Map<string, number>(healthyNodes.map((n) => [n, 0]));
  const candidatesOf = (demand: AddressDemand) =>
    healthyNodes.filter((n) => !demand.localNodes || demand.localNodes.has(n));
  const addresses = [...demands.keys()].sort((a, b) => ipToInt(a) - ipToInt(b));
  const unplaced: string[] = [];
  for (const address of addresses) {
    const kept = previous.get(address);
    if (kept && candidatesOf(demands.get(address)!).includes(kept)) {
      chosen.set(address, kept);
      load.set(kept, (load.get(kept) ?? 0) + 1);
    } else {
      unplaced.push(address);
    }
  }
  for (const address of unplaced) {
    const demand = demands.get(address)!;
    const all = candidatesOf(demand);
    const near = all.filter((n) => demand.endpointNodes?.has(n));
    const candidates = (near.length > 0 ? near : all).sort(
      (a, b) => (load.get(a) ?? 0) - (load.get(b) ?? 0) || a.localeCompare(b),
    );
    const node = candidates[0];
    if (!node) continue;
    chosen.set(address, node);
    load.set(node, (load.get(node) ?? 0) + 1);
  }
  return chosen;
}
