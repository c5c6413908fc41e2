import { describe, expect, it } from 'vitest';
import {
  DATASTORE_FORMS,
  DEFAULT_DATASTORE_PORTS,
  DatastoreUrlError,
  parseDatastoreUrl,
  redactUrl,
} from '../../shared/datastore.js';

// Spelled out rather than taken from the module, so a changed message fails here.
const FORMS =
  'use postgres://user:password@host:5432/database, mysql://user:password@tcp(host:3306)/database, etcd://host:2379, or sqlite';

function parseError(url: string): DatastoreUrlError {
  try {
    parseDatastoreUrl(url);
  } catch (error) {
    expect(error).toBeInstanceOf(DatastoreUrlError);
    return error as DatastoreUrlError;
  }
  throw new Error(`expected ${url} to be rejected`);
}

describe('parseDatastoreUrl', () => {
  it('reads sqlite, with or without ://, in any case and with blanks around', () => {
    expect(parseDatastoreUrl('sqlite')).toEqual({ kind: 'sqlite' });
    expect(parseDatastoreUrl('sqlite://')).toEqual({ kind: 'sqlite' });
    expect(parseDatastoreUrl('  SQLite ')).toEqual({ kind: 'sqlite' });
  });

  it('reads postgres and postgresql URLs', () => {
    expect(parseDatastoreUrl('postgres://u:p@db.example:6543/k8s')).toEqual({
      kind: 'postgres',
      url: 'postgres://u:p@db.example:6543/k8s',
      host: 'db.example',
      port: 6543,
    });
    expect(parseDatastoreUrl('postgresql://db/k8s')).toEqual({
      kind: 'postgres',
      url: 'postgresql://db/k8s',
      host: 'db',
      port: 5432,
    });
    // The URL is kept as written (trimmed), password and query included: kine needs all of it.
    expect(parseDatastoreUrl(' postgres://u:p@db/k?sslmode=disable ')).toMatchObject({
      url: 'postgres://u:p@db/k?sslmode=disable',
    });
  });

  it("reads MySQL in kine's tcp(...) form and as a plain URL", () => {
    expect(parseDatastoreUrl('mysql://root:pw@tcp(mysql.local:3307)/kine')).toEqual({
      kind: 'mysql',
      url: 'mysql://root:pw@tcp(mysql.local:3307)/kine',
      host: 'mysql.local',
      port: 3307,
    });
    expect(parseDatastoreUrl('mysql://root:pw@tcp(mysql.local)/kine')).toMatchObject({ port: 3306 });
    expect(parseDatastoreUrl('mysql://root:pw@tcp(mysql.local:)/kine')).toMatchObject({ port: 3306 });
    expect(parseDatastoreUrl('mysql://tcp(db:3307)/kine')).toMatchObject({ host: 'db', port: 3307 });
    expect(parseDatastoreUrl('mysql://root:pw@mysql.local/kine')).toEqual({
      kind: 'mysql',
      url: 'mysql://root:pw@mysql.local/kine',
      host: 'mysql.local',
      port: 3306,
    });
  });

  it('reads etcd, http and https URLs as etcd', () => {
    expect(parseDatastoreUrl('etcd://10.0.0.5')).toEqual({
      kind: 'etcd',
      url: 'etcd://10.0.0.5',
      host: '10.0.0.5',
      port: 2379,
    });
    expect(parseDatastoreUrl('http://etcd.local')).toMatchObject({ kind: 'etcd', port: 2379 });
    expect(parseDatastoreUrl('https://etcd.local:2380')).toMatchObject({
      kind: 'etcd',
      host: 'etcd.local',
      port: 2380,
    });
  });

  it('takes the scheme in any case', () => {
    expect(parseDatastoreUrl('POSTGRES://Db.Example/k')).toMatchObject({
      kind: 'postgres',
      host: 'Db.Example',
      port: 5432,
    });
    expect(parseDatastoreUrl('MySQL://u:p@TCP(db)/k')).toMatchObject({ kind: 'mysql', host: 'db' });
  });

  it('uses the default port of each server when the URL names none', () => {
    expect(DEFAULT_DATASTORE_PORTS).toEqual({ postgres: 5432, mysql: 3306, etcd: 2379 });
    expect(parseDatastoreUrl('postgres://db/k')).toMatchObject({ port: 5432 });
    expect(parseDatastoreUrl('mysql://u:p@tcp(db)/k')).toMatchObject({ port: 3306 });
    expect(parseDatastoreUrl('mysql://u:p@db/k')).toMatchObject({ port: 3306 });
    expect(parseDatastoreUrl('etcd://db')).toMatchObject({ port: 2379 });
  });

  it('reads IPv6 hosts in brackets and returns them without', () => {
    expect(parseDatastoreUrl('http://[fd00::1]')).toMatchObject({
      kind: 'etcd',
      host: 'fd00::1',
      port: 2379,
    });
    expect(parseDatastoreUrl('postgres://u:p@[::1]:5433/db')).toMatchObject({ host: '::1', port: 5433 });
    expect(parseDatastoreUrl('mysql://u:p@tcp([fd00::2]:3307)/k')).toMatchObject({
      host: 'fd00::2',
      port: 3307,
    });
    expect(parseDatastoreUrl('mysql://u:p@tcp([fd00::2])/k')).toMatchObject({ host: 'fd00::2', port: 3306 });
  });

  it('rejects other schemes and text that is no URL with the forms to use', () => {
    expect(parseError('redis://admin:hunter2@cache:6379').message).toBe(
      `invalid datastore URL "redis://admin:***@cache:6379": ${FORMS}`,
    );
    expect(parseError('db.example').message).toBe(`invalid datastore URL "db.example": ${FORMS}`);
    expect(parseError('').message).toBe(`invalid datastore URL "": ${FORMS}`);
    // SQLite lives inside the control plane; a path is not something to choose.
    expect(parseError('sqlite:///tmp/state.db').message).toBe(
      `invalid datastore URL "sqlite:///tmp/state.db": ${FORMS}`,
    );
    expect(parseError('postgres://u:p@db:abc/x').message).toBe(
      `invalid datastore URL "postgres://u:***@db:abc/x": ${FORMS}`,
    );
  });

  it('says what is wrong with the host or port', () => {
    expect(parseError('postgres:///db').message).toBe(
      `invalid datastore URL "postgres:///db": the host is missing; ${FORMS}`,
    );
    expect(parseError('mysql://u:hunter2@tcp()/db').message).toBe(
      `invalid datastore URL "mysql://u:***@tcp()/db": the host is missing; ${FORMS}`,
    );
    expect(parseError('mysql://u:hunter2@tcp(a:b:c)/db').message).toBe(
      `invalid datastore URL "mysql://u:***@tcp(a:b:c)/db": "a:b:c" is not host:port; ${FORMS}`,
    );
    expect(parseError('postgres://u:hunter2@db%20x/x').message).toBe(
      `invalid datastore URL "postgres://u:***@db%20x/x": "db%20x" is not a host name; ${FORMS}`,
    );
    expect(parseError('postgres://u:hunter2@db:0/x').message).toBe(
      `invalid datastore URL "postgres://u:***@db:0/x": port 0 is not 1-65535; ${FORMS}`,
    );
    expect(parseError('mysql://u:hunter2@tcp(db:99999)/x').message).toBe(
      `invalid datastore URL "mysql://u:***@tcp(db:99999)/x": port 99999 is not 1-65535; ${FORMS}`,
    );
  });

  it('never shows a password in a message, and keeps the message to one line', () => {
    for (const bad of [
      'postgres://admin:hunter2@/db',
      'mysql://u:hunter2@tcp()/db',
      'mysql://u:hunter2@unix(/run/mysqld.sock)/kine',
      'postgres://u:hunter2@db:0/x',
      'postgres://db:0/x?password=hunter2',
      'ftp://u:hunter2@h/db',
    ]) {
      const error = parseError(bad);
      expect(error.name).toBe('DatastoreUrlError');
      expect(error.message).toMatch(/^invalid datastore URL /);
      expect(error.message).not.toMatch(/hunter2/);
      expect(error.message).not.toMatch(/\n/);
    }
  });

  it('lists the same forms it exports', () => {
    expect(DATASTORE_FORMS).toBe(FORMS);
  });
});

describe('redactUrl', () => {
  it('hides the password in the user part, up to the last @', () => {
    expect(redactUrl('postgres://u:hunter2@db/k')).toBe('postgres://u:***@db/k');
    expect(redactUrl('postgres://u:hun@ter2@db/k')).toBe('postgres://u:***@db/k');
    expect(redactUrl('mysql://root:hunter2@tcp(db:3306)/k')).toBe('mysql://root:***@tcp(db:3306)/k');
  });

  it('hides password, pass and pwd query parameters in any case', () => {
    expect(redactUrl('postgres://db/k?sslmode=disable&password=hunter2&user=u')).toBe(
      'postgres://db/k?sslmode=disable&password=***&user=u',
    );
    expect(redactUrl('https://h/x?Pass=hunter2')).toBe('https://h/x?Pass=***');
    expect(redactUrl('https://h/x?a=1&PWD=hunter2')).toBe('https://h/x?a=1&PWD=***');
  });

  it('leaves URLs without a password alone', () => {
    for (const url of ['postgres://db/k', 'mysql://root@tcp(db)/k', 'etcd://10.0.0.5:2379', 'sqlite']) {
      expect(redactUrl(url)).toBe(url);
    }
  });
});
