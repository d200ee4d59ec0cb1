-- errors: error responses (with position, detail, hint) and recovery after each.
CREATE SCHEMA rt_err;
SET search_path = rt_err;
SELEC 1;
SELECT 1 +;
SELECT * FROM no_such_table;
SELECT no_such_column FROM (SELECT 1 AS a) s;
CREATE TABLE u (id int PRIMARY KEY, v int NOT NULL);
INSERT INTO u VALUES (1, 1);
INSERT INTO u VALUES (1, 2);
INSERT INTO u VALUES (2, NULL);
SELECT 'abc'::int;
SELECT 1 / 0;
DO $$ BEGIN RAISE EXCEPTION 'custom failure' USING ERRCODE = 'P0001', DETAIL = 'some detail',
    HINT = 'some hint'; END $$;
\set VERBOSITY verbose
SELECT 2 / 0;
\set VERBOSITY default
SELECT 'still alive' AS status;
DROP SCHEMA rt_err CASCADE;
