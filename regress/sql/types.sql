-- types: values of common types survive the round trip through the proxy unchanged.
CREATE SCHEMA rt_types;
SET search_path = rt_types;
CREATE TABLE t (
    i2 smallint, i4 integer, i8 bigint, n numeric(20, 6), f8 double precision,
    b boolean, t text, vc varchar(10), by bytea, d date, ts timestamp, iv interval,
    u uuid, j jsonb, a int[], r int4range, ip inet
);
INSERT INTO t VALUES
    (-32768, 2147483647, -9223372036854775808, 12345678901234.123456, 1.5e300,
     true, E'tab\there ''quoted''', 'short', '\xdeadbeef', '2024-02-29', '2024-02-29 23:59:59.999999',
     '1 year 2 mons 3 days 04:05:06', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
     '{"k": [1, 2, {"x": null}]}', '{1,2,NULL,4}', '[1,10)', '192.168.0.1/24'),
    (NULL, NULL, NULL, NULL, 'NaN', false, '', NULL, '', 'infinity', '-infinity', '0',
     NULL, 'null', '{}', 'empty', '::1');
SELECT * FROM t ORDER BY i4 NULLS LAST;
SELECT i8 + 1 AS overflow FROM t WHERE i8 IS NOT NULL;
SELECT length(repeat('x', 100000)) AS long_text, md5(repeat('ab', 50000)) AS long_md5;
SELECT 'ünïcödé ☃'::text AS utf8, octet_length('ünïcödé ☃') AS bytes;
SELECT j -> 'k' -> 2 AS path, a[2] AS elem, upper(r) AS up FROM t WHERE i4 IS NOT NULL;
SELECT '1.5'::numeric * 3 AS num, 7 / 2 AS intdiv, 7 % 3 AS modulo, 2 ^ 10 AS power;
DROP SCHEMA rt_types CASCADE;
