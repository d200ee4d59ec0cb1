// txn_named.js: node-postgres named queries through a pgtide in transaction pooling. N clients
// (argv[2], default 50) at once; every client uses the same statement names ('ins', 'get', 'own')
// where 'own' has a different text per client, writes rows and reads back exactly its own values,
// also inside a transaction. Target from PGTIDE_* (no TLS). Exits 1 at the first failure.
'use strict';
const pg = require('pg');

const env = (k, d) => process.env[k] || d;
const n = Number(process.argv[2] || '50');

async function one(id) {
  const c = new pg.Client({
    host: env('PGTIDE_HOST', '127.0.0.1'),
    port: Number(env('PGTIDE_PORT', '6432')),
    user: 'app',
    password: 'secret',
    database: 'appdb',
    ssl: false,
  });
  await c.connect();
  try {
    for (let i = 0; i < 10; i++) {
      await c.query({
        name: 'ins',
        text: 'INSERT INTO txn_drv (drv, client, k, v) VALUES ($1, $2, $3, $4)',
        values: ['node', id, i, `node-${id}-${i}`],
      });
      const own = await c.query({ name: 'own', text: `SELECT $1::int + ${id} AS x`, values: [i] });
      if (own.rows[0].x !== i + id) throw new Error(`client ${id}: own ${own.rows[0].x}`);
    }
    await c.query('BEGIN');
    await c.query({
      name: 'ins',
      text: 'INSERT INTO txn_drv (drv, client, k, v) VALUES ($1, $2, $3, $4)',
      values: ['node', id, 100, `node-${id}-txn`],
    });
    await c.query('COMMIT');
    const r = await c.query({
      name: 'get',
      text: 'SELECT k, v FROM txn_drv WHERE drv = $1 AND client = $2 ORDER BY k',
      values: ['node', id],
    });
    const want = [...Array(10).keys()].map((i) => `${i}:node-${id}-${i}`).concat([`100:node-${id}-txn`]);
    const got = r.rows.map((x) => `${x.k}:${x.v}`);
    if (JSON.stringify(got) !== JSON.stringify(want)) {
      throw new Error(`client ${id} read back ${JSON.stringify(got)}`);
    }
  } finally {
    await c.end();
  }
}

(async () => {
  const res = await Promise.allSettled([...Array(n).keys()].map(one));
  const bad = res.filter((r) => r.status === 'rejected');
  for (const b of bad.slice(0, 5)) console.log('FAIL: ' + b.reason);
  console.log(`node: ${n - bad.length} of ${n} clients ok`);
  process.exit(bad.length ? 1 : 0);
})();
