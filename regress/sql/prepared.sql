-- prepared: SQL-level prepared statements, and the extended protocol via psql's \gset/\gexec.
CREATE SCHEMA rt_prep;
SET search_path = rt_prep;
CREATE TABLE p (id int, v text);
PREPARE ins(int, text) AS INSERT INTO p VALUES ($1, $2);
EXECUTE ins(1, 'one');
EXECUTE ins(2, 'two');
PREPARE sel(int) AS SELECT v FROM p WHERE id = $1;
EXECUTE sel(2);
SELECT name, statement, parameter_types FROM pg_prepared_statements ORDER BY name;
EXECUTE sel('not an int');
PREPARE ins(int) AS SELECT 1;
DEALLOCATE ins;
EXECUTE ins(3, 'three');
SELECT id AS got_id FROM p WHERE v = 'one' \gset
SELECT :got_id + 1 AS next_id;
SELECT format('SELECT %s AS gexec_%s', g, g) FROM generate_series(1, 3) g \gexec
DEALLOCATE ALL;
SELECT count(*) FROM pg_prepared_statements;
DROP SCHEMA rt_prep CASCADE;
