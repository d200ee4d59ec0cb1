-- notices: NOTICE/WARNING/INFO messages and client_min_messages pass through in order.
CREATE SCHEMA rt_notice;
SET search_path = rt_notice;
DO $$ BEGIN RAISE NOTICE 'a notice with %', 'an argument'; END $$;
DO $$ BEGIN RAISE WARNING 'a warning'; END $$;
DO $$ BEGIN RAISE INFO 'an info'; END $$;
DO $$ BEGIN FOR i IN 1..3 LOOP RAISE NOTICE 'notice %', i; END LOOP; END $$;
SET client_min_messages = warning;
DO $$ BEGIN RAISE NOTICE 'hidden'; RAISE WARNING 'shown'; END $$;
RESET client_min_messages;
CREATE TABLE IF NOT EXISTS x (i int);
CREATE TABLE IF NOT EXISTS x (i int);
DROP TABLE IF EXISTS nope;
CREATE FUNCTION noisy(n int) RETURNS int LANGUAGE plpgsql AS $$
BEGIN RAISE NOTICE 'noisy(%)', n; RETURN n * 2; END $$;
SELECT noisy(i) FROM generate_series(1, 3) i;
DROP SCHEMA rt_notice CASCADE;
