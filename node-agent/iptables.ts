// iptables rules the agent adds, each once: a rule already there (a restart of the agent) is kept.

import { execa } from 'execa';

export async function iptables(args: string[]): Promise<void> {
  // -C first: rules survive a restart of node-agent, and appending twice would duplicate them.
  const check = await execa('iptables', ['-C', ...args.slice(1)], { reject: false });
  if (check.exitCode === 0) return;
  await execa('iptables', args);
}

/** TCP through the tunnel keeps to its MTU, whatever the pods' own MTU (both directions). */
export async function mssClamp(device: string): Promise<void> {
  for (const direction of ['-o', '-i']) {
    await iptables([
      '-A',
      'FORWARD',
      '-t',
      'mangle',
      direction,
      device,
      '-p',
      'tcp',
      '--tcp-flags',
      'SYN,RST',
      'SYN',
      '-j',
      'TCPMSS',
      '--clamp-mss-to-pmtu',
    ]);
  }
}
