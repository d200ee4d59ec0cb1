-- driver.sql: the psql leg of pgtide's driver matrix, run with ON_ERROR_STOP by
-- regress/e2e/t_driver_psql.sh. Every check calls pg_temp.check(condition, what), which raises
-- an error (and so stops psql with a non-zero exit) when the condition is not true. The script
-- covers DDL, DML, psql variables as parameters, prepared statements, a rolled-back
-- transaction, \copy in and out, and a syntax error followed by recovery.
\set ON_ERROR_STOP 1
\set VERBOSITY verbose
SET client_min_messages = warning;
CREATE FUNCTION pg_temp.check(ok boolean, what text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION 'check failed: %', what;
    END IF;
END $$;

-- DDL
DROP TABLE IF EXISTS drv_psql_items;
CREATE TABLE drv_psql_items (id int PRIMARY KEY, name text NOT NULL, amount numeric(10, 2));

-- DML
INSERT INTO drv_psql_items VALUES (1, 'one', 1.50), (2, 'two', 2.25), (3, 'three', 3.00);
UPDATE drv_psql_items SET amount = amount * 2 WHERE id = 2;
DELETE FROM drv_psql_items WHERE id = 3;
SELECT pg_temp.check(count(*) = 2 AND sum(amount) = 6.00, 'DML result')
FROM drv_psql_items;

-- parameters (psql variables, quoted client-side)
\set item_name 'it''s four'
\set item_id 4
INSERT INTO drv_psql_items VALUES (:item_id, :'item_name', 4.00);
SELECT pg_temp.check(name = 'it''s four', 'variable round trip')
FROM drv_psql_items WHERE id = :item_id;

-- prepared statements
PREPARE ins(int, text, numeric) AS INSERT INTO drv_psql_items VALUES ($1, $2, $3);
EXECUTE ins(5, 'five', 5.5);
EXECUTE ins(6, 'six', 6.5);
PREPARE get(int) AS SELECT name FROM drv_psql_items WHERE id = $1;
EXECUTE get(6) \gset prep_
SELECT pg_temp.check(:'prep_name' = 'six', 'prepared select');
DEALLOCATE ins;
DEALLOCATE get;

-- transaction with rollback
BEGIN;
INSERT INTO drv_psql_items VALUES (100, 'gone', 0);
SELECT pg_temp.check(count(*) = 1, 'row visible inside tx') FROM drv_psql_items WHERE id = 100;
ROLLBACK;
SELECT pg_temp.check(count(*) = 0, 'rolled back') FROM drv_psql_items WHERE id = 100;

-- COPY in and out through \copy (files in the current directory, set by the test script)
DROP TABLE IF EXISTS drv_psql_copy;
CREATE TABLE drv_psql_copy (id int, txt text);
\copy drv_psql_copy FROM 'copy_in.csv' WITH (FORMAT csv)
SELECT pg_temp.check(count(*) = 20000 AND sum(id) = 200010000, 'copy in count')
FROM drv_psql_copy;
\copy (SELECT id, txt FROM drv_psql_copy ORDER BY id) TO 'copy_out.csv' WITH (FORMAT csv)

-- a syntax error, then the session keeps working
\set ON_ERROR_STOP 0
SELEC 1;
\set ON_ERROR_STOP 1
SELECT pg_temp.check(:'LAST_ERROR_SQLSTATE' = '42601', 'syntax error sqlstate');
SELECT 'recovered' AS after_error;

DROP TABLE drv_psql_copy;
DROP TABLE drv_psql_items;
\echo DRIVER_PSQL_DONE
