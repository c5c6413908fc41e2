// node-agent writes its own lines to stdout (read with `docker logs`); daemons log to files.

export function log(message: string): void {
  process.stdout.write(`${new Date().toISOString()} node-agent: ${message}\n`);
}
