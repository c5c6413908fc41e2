// Following small files inside a container with one long-running shell loop. Waiting on a node's
// status by running `cat` every 200 ms cost the engine about 0.1 s of CPU per look: half a core of
// a two-core machine taken from the cluster it waited for. The loop reads with the shell's builtin
// `read` and forks only `sleep`; it prints a file when its content changes and ends by itself.

import type { FileChange, FollowOptions } from './runtime.js';

/**
 * POSIX sh. Arguments: ticks, interval in seconds, the number of end markers, the markers, then the
 * files. Each change is printed as "<file index> <first line>". The loop ends once the first file
 * holds a marker, or after `ticks` intervals.
 */
const FOLLOW_SCRIPT = String.raw`
ticks=$1; interval=$2; count=$3; shift 3
nl='
'
markers=; i=0
while [ $i -lt $count ]; do markers="$markers$1$nl"; shift; i=$((i + 1)); done
tick=0
while :; do
  k=0
  for file in "$@"; do
    k=$((k + 1)); now=
    if [ -r "$file" ]; then IFS= read -r now < "$file" || true; fi
    eval "known=\${seen_$k+y} was=\${seen_$k-}"
    if [ -z "$known" ] || [ "$now" != "$was" ]; then
      printf '%s %s\n' "$k" "$now"
      eval "seen_$k=\$now"
    fi
  done
  if [ -n "$seen_1" ]; then
    IFS=$nl; set -f
    for m in $markers; do case "$seen_1" in *"$m"*) exit 0 ;; esac; done
    unset IFS; set +f
  fi
  tick=$((tick + 1)); [ $tick -ge $ticks ] && exit 0
  sleep "$interval"
done
`;

/** The command that follows `paths` inside a container. */
export function followCommand(paths: string[], options: FollowOptions): string[] {
  const intervalMs = options.intervalMs ?? 100;
  const ticks = Math.max(1, Math.ceil(options.timeoutMs / intervalMs));
  return [
    'sh',
    '-c',
    FOLLOW_SCRIPT,
    'follow',
    String(ticks),
    (intervalMs / 1000).toFixed(3),
    String(options.endWhenFirstHas.length),
    ...options.endWhenFirstHas,
    ...paths,
  ];
}

/** Turns the loop's output, as it arrives in pieces, into changes of the named files. */
export class FollowParser {
  private pending = '';

  constructor(private readonly paths: string[]) {}

  push(chunk: string): FileChange[] {
    this.pending += chunk;
    const lines = this.pending.split('\n');
    this.pending = lines.pop() ?? '';
    const changes: FileChange[] = [];
    for (const line of lines) {
      const space = line.indexOf(' ');
      const index = Number(space < 0 ? line : line.slice(0, space));
      const path = this.paths[index - 1];
      if (path !== undefined) changes.push({ path, content: space < 0 ? '' : line.slice(space + 1) });
    }
    return changes;
  }
}
