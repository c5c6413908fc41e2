// Counts packets for cluster-internal networks that try to leave the host through anything but a
// Docker bridge: the leak the control plane once had (its request to a pod IP followed the default
// route off the machine). The rules also REJECT what they count, so a leak during a test never
// reaches the outside either. They sit in Docker's DOCKER-USER chain, which Docker keeps first in
// FORWARD; rules placed in FORWARD directly are bypassed by the ACCEPTs Docker adds per network.

import { execa } from 'execa';

const CHAIN = 'DOCKER-USER';
const COMMENT_PREFIX = 'vind-e2e-leak';

function ruleSpec(cidr: string, comment: string): string[] {
  return ['-d', cidr, '!', '-o', 'br-+', '-m', 'comment', '--comment', comment, '-j', 'REJECT'];
}

async function iptables(args: string[]) {
  const result = await execa('iptables', ['-w', ...args], { reject: false });
  if (result.exitCode !== 0) throw new Error(`iptables ${args.join(' ')}: ${result.stderr.trim()}`);
  return result.stdout;
}

/** Removes the rules of earlier runs that were killed before they could clean up. */
async function removeStaleRules(): Promise<void> {
  const rules = (await iptables(['-S', CHAIN])).split('\n');
  for (const rule of rules.filter((r) => r.includes(COMMENT_PREFIX))) {
    const args = rule.replace(/^-A /, '-D ').match(/"[^"]*"|\S+/g) ?? [];
    await iptables(args.map((a) => a.replace(/^"|"$/g, ''))).catch(() => undefined);
  }
}

export class LeakCounter {
  private constructor(
    private readonly cidrs: string[],
    private readonly comment: string,
  ) {}

  static async install(cidrs: string[]): Promise<LeakCounter> {
    const chains = await execa('iptables', ['-w', '-S', CHAIN], { reject: false });
    if (chains.exitCode !== 0) {
      throw new Error(`Docker's ${CHAIN} chain is missing: is dockerd running with its iptables rules?`);
    }
    await removeStaleRules();
    const counter = new LeakCounter(cidrs, `${COMMENT_PREFIX}-${process.pid}`);
    for (const cidr of cidrs) await iptables(['-I', CHAIN, '1', ...ruleSpec(cidr, counter.comment)]);
    return counter;
  }

  /** Packets counted per CIDR since the rules were installed. */
  async counts(): Promise<Record<string, number>> {
    const listing = await iptables(['-L', CHAIN, '-n', '-v', '-x']);
    const counts: Record<string, number> = {};
    for (const cidr of this.cidrs) {
      const line = listing.split('\n').find((l) => l.includes(`/* ${this.comment} */`) && l.includes(cidr));
      if (!line) throw new Error(`the leak counting rule for ${cidr} is gone from ${CHAIN}`);
      counts[cidr] = Number(line.trim().split(/\s+/)[0]);
    }
    return counts;
  }

  async total(): Promise<number> {
    return Object.values(await this.counts()).reduce((a, b) => a + b, 0);
  }

  async remove(): Promise<void> {
    for (const cidr of this.cidrs) {
      await iptables(['-D', CHAIN, ...ruleSpec(cidr, this.comment)]).catch(() => undefined);
    }
  }
}
