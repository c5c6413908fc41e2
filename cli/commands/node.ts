import type { Command } from 'commander';
import { VindError } from '../../shared/errors.js';
import { parseDuration } from '../duration.js';
import { consoleReporter, formatDuration } from '../progress.js';
import {
  addRemoteNode,
  formatBytes,
  joinCluster,
  leaveCluster,
  listClusterNodes,
  parseLabels,
  parseTaints,
  removeClusterNode,
} from '../remote-nodes.js';
import { dockerRuntime } from '../runtime/docker-runtime.js';

function ago(iso: string | undefined): string {
  if (!iso) return 'never';
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  return seconds < 120 ? `${seconds}s ago` : `${Math.round(seconds / 60)}m ago`;
}

export function registerNodeCommands(program: Command): void {
  const node = program.command('node').description("a cluster's nodes, local and remote");
  node
    .command('add')
    .description('add a node; with --remote, print the command that joins another machine over WireGuard')
    .argument('<name>', 'node name')
    .requiredOption('--remote', 'a machine elsewhere joins with `vind join <secret>`')
    .option('--cluster <name>', 'cluster name', 'vind')
    .option('--labels <k=v,...>', 'node labels')
    .option('--taints <k=v:Effect,...>', 'node taints, e.g. gpu=true:NoSchedule')
    .option('--ttl <duration>', 'how long the secret may be used', '1h')
    .option(
      '--endpoint <host:port...>',
      "where the remote reaches the hub (default: this host's addresses at the hub's port)",
    )
    .option(
      '--dial <host:port>',
      'the hub dials the remote instead, at this address and UDP port (it listens: for a remote with a public address)',
    )
    .action(
      async (
        name: string,
        options: {
          cluster: string;
          labels?: string;
          taints?: string;
          ttl: string;
          endpoint?: string[];
          dial?: string;
        },
      ) => {
        let ttlMs: number;
        try {
          ttlMs = parseDuration(options.ttl);
        } catch (error) {
          throw new VindError(`invalid --ttl: ${(error as Error).message}`);
        }
        if (ttlMs <= 0) throw new VindError('invalid --ttl: use a duration above 0, e.g. 1h');
        const runtime = dockerRuntime();
        await runtime.ping();
        const secret = await addRemoteNode(runtime, options.cluster, name, {
          labels: parseLabels(options.labels),
          taints: parseTaints(options.taints),
          ttlMs,
          endpoints: options.endpoint,
          dial: options.dial,
        });
        process.stderr.write(
          `Run this on the other machine (Linux with Docker and the node image) within ${options.ttl}; the secret works once:\n`,
        );
        process.stdout.write(`vind join ${secret}\n`);
      },
    );
  node
    .command('list')
    .description('the nodes of a cluster, with the tunnel of each remote one')
    .argument('[cluster]', 'cluster name', 'vind')
    .option('--json', 'print JSON', false)
    .action(async (cluster: string, options: { json: boolean }) => {
      const runtime = dockerRuntime();
      await runtime.ping();
      const rows = await listClusterNodes(runtime, cluster);
      if (options.json) {
        process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
        return;
      }
      const table = [
        ['NAME', 'KIND', 'STATUS', 'ADDRESS', 'ENDPOINT', 'HANDSHAKE', 'RECEIVED', 'SENT'],
        ...rows.map((r) => [
          r.name,
          r.kind,
          r.ready ? 'Ready' : 'NotReady',
          r.address ?? '-',
          r.tunnel?.endpoint ?? '-',
          r.tunnel ? ago(r.tunnel.latestHandshake) : '-',
          r.tunnel ? formatBytes(r.tunnel.rxBytes) : '-',
          r.tunnel ? formatBytes(r.tunnel.txBytes) : '-',
        ]),
      ];
      const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
      for (const row of table) {
        process.stdout.write(
          `${row
            .map((cell, i) => cell.padEnd(widths[i]!))
            .join('   ')
            .trimEnd()}\n`,
        );
      }
    });
  node
    .command('remove')
    .description('drain and delete a node; a remote one loses its tunnel and its secret')
    .argument('<name>', 'node name')
    .option('--cluster <name>', 'cluster name', 'vind')
    .action(async (name: string, options: { cluster: string }) => {
      const runtime = dockerRuntime();
      await runtime.ping();
      await removeClusterNode(runtime, options.cluster, name);
      process.stderr.write(`Node "${name}" removed from cluster "${options.cluster}"\n`);
    });

  program
    .command('join')
    .description("on a remote machine: start a worker here that joins a cluster through its hub's tunnel")
    .argument('<secret>', 'what `vind node add NAME --remote` printed')
    .option(
      '--listen <[address:]port>',
      "publish the node's WireGuard port here and let the hub dial it (default: the port `node add --dial` named)",
    )
    .action(async (secret: string, options: { listen?: string }) => {
      const runtime = dockerRuntime();
      await runtime.ping();
      const started = performance.now();
      const name = await joinCluster(runtime, secret, consoleReporter(), options);
      process.stderr.write(`${name} joined in ${formatDuration(performance.now() - started)}\n`);
    });
  program
    .command('leave')
    .description('on a remote machine: remove the remote nodes that run here (or the one named)')
    .argument('[node]', 'node name')
    .action(async (nodeName: string | undefined) => {
      const runtime = dockerRuntime();
      await runtime.ping();
      const removed = await leaveCluster(runtime, nodeName);
      process.stderr.write(`Removed ${removed.join(', ')}\n`);
    });
}
