import { describe, expect, it } from 'vitest';
import { fatalDatastoreError } from '../../node-agent/datastore-errors.js';

describe('fatalDatastoreError', () => {
  it('reads a refused PostgreSQL password out of kine output, colour codes and all', () => {
    const line =
      '\x1b[31mERRO\x1b[0m[2026-11-22T14:05:32Z] Failed to ping database connection: failed to connect to ' +
      '`user=vind database=kine`: 127.0.0.1:25432 (127.0.0.1): failed SASL auth: FATAL: password ' +
      'authentication failed for user "vind" (SQLSTATE 28P01) ';
    expect(fatalDatastoreError(line)).toBe(
      'the password was refused (PostgreSQL: password authentication failed for user "vind"): ' +
        'check the user, password and database in --datastore',
    );
  });

  it('reads MySQL refusals with and without the SQLSTATE', () => {
    expect(
      fatalDatastoreError(
        "Failed to ping connection: Error 1045 (28000): Access denied for user 'vind'@'172.30.0.2' (using password: YES)",
      ),
    ).toMatch(/^the user or password was refused \(MySQL: Access denied for user 'vind'/);
    expect(fatalDatastoreError("Error 1044: Access denied for user 'vind'@'%' to database 'k8s'")).toMatch(
      /^the user may not use that database \(MySQL: Access denied/,
    );
  });

  it('reads a missing database that the user may not create', () => {
    expect(
      fatalDatastoreError(
        'failed to create database: ERROR: permission denied to create database (SQLSTATE 42501)',
      ),
    ).toMatch(
      /^the user may not create or use the database \(PostgreSQL: permission denied to create database\)/,
    );
    expect(fatalDatastoreError('FATAL: permission denied for database "k8s" (SQLSTATE 42501)')).toMatch(
      /^the user may not create or use the database \(PostgreSQL: permission denied for database "k8s"\)/,
    );
  });

  it('leaves errors that can heal alone, a missing database among them (kine makes it)', () => {
    expect(fatalDatastoreError("Error 1049 (42000): Unknown database 'kine'")).toBeUndefined();
    expect(fatalDatastoreError('FATAL: database "kine" does not exist (SQLSTATE 3D000)')).toBeUndefined();
    expect(fatalDatastoreError('dial tcp 172.17.0.1:5432: connect: connection refused')).toBeUndefined();
    expect(fatalDatastoreError('FATAL: the database system is starting up (SQLSTATE 57P03)')).toBeUndefined();
    expect(fatalDatastoreError('Error 1040: Too many connections')).toBeUndefined();
  });
});
