// Datastore URLs: which store the cluster keeps its state in (kine over SQLite inside the control plane,
// or an external PostgreSQL, MySQL or etcd) and the host and port to reach it at.
// The CLI checks the URL before it creates anything, and the node-agent reads the same text to start kine,
// so both use this one parser. It lives in shared/ because the agent bundle must stay free of the CLI's
// dependencies: Node built-ins only, and its own error class, which the CLI turns into a ConfigError.

export type ExternalDatastoreKind = 'postgres' | 'mysql' | 'etcd';

export type Datastore =
  { kind: 'sqlite' } | { kind: ExternalDatastoreKind; url: string; host: string; port: number };

/** The forms every rejection lists, so the user sees what to write instead. */
export const DATASTORE_FORMS =
  'use postgres://user:password@host:5432/database, mysql://user:password@tcp(host:3306)/database, etcd://host:2379, or sqlite';

/** The port each server listens on out of the box, used when the URL names none. */
export const DEFAULT_DATASTORE_PORTS: Readonly<Record<ExternalDatastoreKind, number>> = {
  postgres: 5432,
  mysql: 3306,
  etcd: 2379,
};

/** A datastore URL that cannot be used; the message is one line and never shows a password. */
export class DatastoreUrlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DatastoreUrlError';
  }
}

/** Hides passwords, in the user part of the URL and in query parameters, before the URL goes into a message. */
export function redactUrl(url: string): string {
  let text = url.replace(/([?&](?:password|pass|pwd)=)[^&]*/gi, '$1***');
  const schemeEnd = text.indexOf('://');
  // The last '@' ends the user part: a password may itself contain '@'.
  const at = text.lastIndexOf('@');
  if (schemeEnd >= 0 && at > schemeEnd) {
    const userInfo = text.slice(schemeEnd + 3, at);
    const colon = userInfo.indexOf(':');
    if (colon >= 0) text = `${text.slice(0, schemeEnd + 3)}${userInfo.slice(0, colon)}:***${text.slice(at)}`;
  }
  return text;
}

function datastoreKind(scheme: string): ExternalDatastoreKind | undefined {
  switch (scheme) {
    case 'postgres':
    case 'postgresql':
      return 'postgres';
    case 'mysql':
      return 'mysql';
    // kine reads http(s):// endpoints as etcd, so they mean etcd here too.
    case 'etcd':
    case 'http':
    case 'https':
      return 'etcd';
    default:
      return undefined;
  }
}

/** "host", "host:port", "[v6]" or "[v6]:port", as inside kine's MySQL `tcp(...)`. */
function splitHostPort(text: string): { host: string; port?: string } | undefined {
  const match = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]*)(?::([0-9]*))?$/.exec(text);
  if (!match) return undefined;
  return { host: match[1] ?? '', port: match[2] };
}

/**
 * Reads `sqlite`, `postgres(ql)://`, `mysql://` (kine's `tcp(host:port)` form or a plain URL) and
 * `etcd://`/`http(s)://` URLs. Throws DatastoreUrlError.
 */
export function parseDatastoreUrl(url: string): Datastore {
  const text = url.trim();
  const invalid = (why = '') =>
    new DatastoreUrlError(
      `invalid datastore URL "${redactUrl(text)}": ${why ? `${why}; ` : ''}${DATASTORE_FORMS}`,
    );
  if (/^sqlite(:\/\/)?$/i.test(text)) return { kind: 'sqlite' };
  const scheme = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(text)?.[1]?.toLowerCase();
  const kind = scheme === undefined ? undefined : datastoreKind(scheme);
  if (kind === undefined) throw invalid();

  let host: string;
  let portText: string | undefined;
  // kine's MySQL DSN: mysql://user:password@tcp(host:3306)/database, which URL parsing cannot read.
  const dsn = kind === 'mysql' ? /^mysql:\/\/(?:.*@)?tcp\(([^)]*)\)(?:\/.*)?$/i.exec(text) : null;
  if (dsn) {
    const parts = splitHostPort(dsn[1] ?? '');
    if (!parts) throw invalid(`"${dsn[1]}" is not host:port`);
    host = parts.host;
    portText = parts.port;
  } else {
    let parsed: URL;
    try {
      parsed = new URL(text);
    } catch {
      throw invalid();
    }
    host = parsed.hostname;
    portText = parsed.port;
  }
  host = host.replace(/^\[(.*)\]$/, '$1');
  if (!host) throw invalid('the host is missing');
  if (!/^[A-Za-z0-9._-]+$/.test(host) && !/^[0-9A-Fa-f:.]+$/.test(host))
    throw invalid(`"${host}" is not a host name`);
  const port = portText ? Number(portText) : DEFAULT_DATASTORE_PORTS[kind];
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw invalid(`port ${portText} is not 1-65535`);
  return { kind, url: text, host, port };
}
