// driver.js: the node-postgres leg of pgtide's driver matrix. Reads the target from PGTIDE_*,
// connects over TLS (certificate not validated: test servers are self-signed) with SCRAM, then
// covers DDL, DML, parameters, named prepared statements, a rolled-back transaction, COPY in and
// out (pg-copy-streams), a 100,000-row result, LISTEN/NOTIFY, cancel of pg_sleep through a
// CancelRequest carrying the BackendKeyData the client was given (57014), a syntax error (42601)
// then recovery, and a wrong password (28P01). Exits 1 at the first failure.
'use strict';
const crypto = require('crypto');
const net = require('net');
const { Readable, Writable } = require('stream');
const { pipeline } = require('stream/promises');
const pg = require('pg');
const copyStreams = require('pg-copy-streams');

const env = (k, d) => process.env[k] || d;
const config = (password) => ({
  host: env('PGTIDE_HOST', '127.0.0.1'),
  port: Number(env('PGTIDE_PORT', '6432')),
  user: env('PGTIDE_USER', 'app'),
  database: env('PGTIDE_DB', 'appdb'),
  password: password === undefined ? env('PGTIDE_PASSWORD', 'secret') : password,
  ssl: { rejectUnauthorized: false },
  connectionTimeoutMillis: 10000,
});

function check(cond, what) {
  if (!cond) {
    console.log('FAIL: ' + what);
    process.exit(1);
  }
}
const ok = (what) => console.log('ok: ' + what);

// Sends a CancelRequest (plain TCP, as libpq does) for the given backend key.
function sendCancel(pid, secret) {
  return new Promise((resolve, reject) => {
    const sock = net.connect(config().port, config().host, () => {
      const b = Buffer.alloc(16);
      b.writeInt32BE(16, 0);
      b.writeInt32BE(80877102, 4);
      b.writeInt32BE(pid, 8);
      b.writeInt32BE(secret, 12);
      sock.end(b);
    });
    sock.on('close', resolve);
    sock.on('error', reject);
  });
}

async function expectError(promise, code, what) {
  try {
    await promise;
  } catch (e) {
    check(e.code === code, `${what}: code ${e.code} (${e.message})`);
    return;
  }
  check(false, `${what}: no error`);
}

async function main() {
  const c = new pg.Client(config());
  await c.connect();
  check(c.connection.stream.encrypted === true, 'TLS in use');
  await c.query('SET client_min_messages = warning');
  await c.query('DROP TABLE IF EXISTS drv_node_items');
  await c.query('CREATE TABLE drv_node_items (id int PRIMARY KEY, name text, doc jsonb)');
  for (let i = 1; i <= 20; i++) {
    await c.query('INSERT INTO drv_node_items VALUES ($1, $2, $3)', [i, `it's "${i}"`, { i }]);
  }
  let r = await c.query('UPDATE drv_node_items SET name = upper(name) WHERE id <= $1', [5]);
  check(r.rowCount === 5, 'update rowCount');
  r = await c.query('DELETE FROM drv_node_items WHERE id > $1', [10]);
  check(r.rowCount === 10, 'delete rowCount');
  r = await c.query('SELECT name, doc FROM drv_node_items WHERE id = $1', [7]);
  check(r.rows[0].name === 'it\'s "7"' && r.rows[0].doc.i === 7, 'param round trip');
  ok('ddl/dml/parameters');

  for (let i = 1; i <= 5; i++) {
    r = await c.query({ name: 'drv_node_get', text: 'SELECT id FROM drv_node_items WHERE id = $1',
      values: [i] });
    check(r.rows[0].id === i, 'prepared');
  }
  r = await c.query("SELECT count(*)::int AS n FROM pg_prepared_statements WHERE name = 'drv_node_get'");
  check(r.rows[0].n === 1, 'named prepared statement on the server');
  ok('prepared statements');

  await c.query('BEGIN');
  await c.query("INSERT INTO drv_node_items VALUES (99, 'gone', null)");
  await c.query('ROLLBACK');
  r = await c.query('SELECT count(*)::int AS n FROM drv_node_items WHERE id = 99');
  check(r.rows[0].n === 0, 'rollback');
  ok('rollback');

  await c.query('CREATE TEMP TABLE drv_node_copy (id int, t text)');
  let payload = '';
  for (let i = 1; i <= 30000; i++) payload += `${i}\trow \\t "${i}"\n`;
  await pipeline(Readable.from([payload]), c.query(copyStreams.from('COPY drv_node_copy FROM STDIN')));
  const chunks = [];
  await pipeline(c.query(copyStreams.to('COPY (SELECT * FROM drv_node_copy ORDER BY id) TO STDOUT')),
    new Writable({ write(chunk, enc, cb) { chunks.push(chunk); cb(); } }));
  check(Buffer.concat(chunks).toString() === payload, 'copy out == copy in');
  ok('copy in/out');

  r = await c.query('SELECT g, md5(g::text) AS h FROM generate_series(1, 100000) g');
  check(r.rows.length === 100000, '100k rows');
  r.rows.forEach((row, i) => {
    if (row.g !== i + 1 || row.h !== crypto.createHash('md5').update(String(i + 1)).digest('hex')) {
      check(false, `row ${i}`);
    }
  });
  ok('100000-row result');

  const got = new Promise((resolve) => c.on('notification', resolve));
  await c.query('LISTEN drv_node_chan');
  const other = new pg.Client(config());
  await other.connect();
  await other.query("NOTIFY drv_node_chan, 'hello node'");
  await other.end();
  const note = await Promise.race([got, new Promise((res) => setTimeout(() => res(null), 15000).unref())]);
  check(note && note.channel === 'drv_node_chan' && note.payload === 'hello node', 'notification');
  await c.query('UNLISTEN *');
  ok('listen/notify');

  const start = Date.now();
  // settle at once so the rejection is handled before it is awaited
  const sleeping = c.query('SELECT pg_sleep(60)').then(() => null, (e) => Promise.reject(e));
  sleeping.catch(() => {});
  await new Promise((res) => setTimeout(res, 1000));
  await sendCancel(c.processID, c.secretKey);
  await expectError(sleeping, '57014', 'cancel');
  check(Date.now() - start < 20000, 'cancel took too long');
  r = await c.query('SELECT 1 AS one');
  check(r.rows[0].one === 1, 'alive after cancel');
  ok('cancel 57014');

  await expectError(c.query('SELEC 1'), '42601', 'syntax error');
  r = await c.query('SELECT $1::int AS two', [2]);
  check(r.rows[0].two === 2, 'recovery after syntax error');
  ok('syntax error 42601 then recovery');

  await c.query('DROP TABLE drv_node_items');
  await c.end();

  const bad = new pg.Client(config('wrong-password'));
  await expectError(bad.connect(), '28P01', 'wrong password');
  ok('wrong password 28P01');
  console.log('all ok');
}

main().catch((e) => {
  console.log('FAIL: ' + (e.stack || e));
  process.exit(1);
});
