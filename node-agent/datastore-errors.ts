// Some datastore errors cannot heal by waiting: a wrong password, a user without access. (A database
// that does not exist is not one: kine makes it, after its first attempt reports it missing.) kine
// retries them for a while before it gives up, and the API server waits on
// kine, so without a look at kine's output a create would wait minutes for nothing. These are the
// errors, as PostgreSQL (SQLSTATE) and MySQL (error number) report them through kine's drivers.

const POSTGRES_FATAL: Record<string, string> = {
  '28P01': 'the password was refused',
  '28000': 'the user may not connect',
  // kine makes a missing database; a user who may not do that gets this.
  '42501': 'the user may not create or use the database',
};

const MYSQL_FATAL: Record<string, string> = {
  '1045': 'the user or password was refused',
  '1044': 'the user may not use that database',
};

/** One line for the user when a line of kine's output is a datastore error that waiting cannot fix. */
export function fatalDatastoreError(line: string): string | undefined {
  // Colour codes of kine's logger would end up in the message.
  const text = line.replace(new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, 'g'), '');
  const postgres = /(?:FATAL|ERROR): (.*?) \(SQLSTATE (\w{5})\)/.exec(text);
  if (postgres && POSTGRES_FATAL[postgres[2]!]) {
    return `${POSTGRES_FATAL[postgres[2]!]} (PostgreSQL: ${postgres[1]}): check the user, password and database in --datastore`;
  }
  const mysql = /Error (\d{4})(?: \(\w{5}\))?: ([^\n]*)/.exec(text);
  if (mysql && MYSQL_FATAL[mysql[1]!]) {
    return `${MYSQL_FATAL[mysql[1]!]} (MySQL: ${mysql[2]!.trim()}): check the user, password and database in --datastore`;
  }
  return undefined;
}
