-- copy: COPY FROM STDIN (text and csv) and COPY TO STDOUT through the proxy.
CREATE SCHEMA rt_copy;
SET search_path = rt_copy;
CREATE TABLE c (id int, name text, note text);
COPY c FROM stdin;
1	alpha	\N
2	beta with spaces	tab\there
3	gamma	back\\slash
\.
COPY c FROM stdin WITH (FORMAT csv, HEADER true);
id,name,note
4,"delta, with comma","quote ""inside"""
5,epsilon,
\.
SELECT * FROM c ORDER BY id;
COPY c TO stdout;
COPY (SELECT id, name FROM c WHERE id > 3 ORDER BY id) TO stdout WITH (FORMAT csv, HEADER true);
COPY c FROM stdin;
6	zeta	ok
not a number	x	y
\.
SELECT count(*) FROM c;
COPY (SELECT g, g * g FROM generate_series(1, 5) g) TO stdout WITH (DELIMITER '|');
DROP SCHEMA rt_copy CASCADE;
