-- joins: inner, outer, lateral and aggregate queries with deterministic ordering.
CREATE SCHEMA rt_joins;
SET search_path = rt_joins;
CREATE TABLE dept (id int PRIMARY KEY, name text);
CREATE TABLE emp (id int PRIMARY KEY, dept_id int REFERENCES dept, name text, salary int);
INSERT INTO dept VALUES (1, 'eng'), (2, 'ops'), (3, 'empty');
INSERT INTO emp SELECT g, 1 + g % 2, 'e' || g, 1000 * g FROM generate_series(1, 10) g;
INSERT INTO emp VALUES (11, NULL, 'nodept', 500);
SELECT d.name, count(e.id), sum(e.salary) FROM dept d LEFT JOIN emp e ON e.dept_id = d.id
GROUP BY d.name ORDER BY d.name;
SELECT e.name, d.name FROM emp e FULL JOIN dept d ON e.dept_id = d.id
WHERE e.id IS NULL OR d.id IS NULL ORDER BY 1, 2;
SELECT d.name, top.name, top.salary FROM dept d,
    LATERAL (SELECT name, salary FROM emp WHERE dept_id = d.id ORDER BY salary DESC LIMIT 2) top
ORDER BY d.name, top.salary DESC;
SELECT name, salary, rank() OVER (PARTITION BY dept_id ORDER BY salary DESC) FROM emp
ORDER BY dept_id NULLS LAST, salary DESC;
WITH RECURSIVE fib(n, a, b) AS (SELECT 1, 0::bigint, 1::bigint
    UNION ALL SELECT n + 1, b, a + b FROM fib WHERE n < 50)
SELECT n, a FROM fib WHERE n % 10 = 0;
EXPLAIN (COSTS OFF) SELECT * FROM emp JOIN dept ON dept.id = emp.dept_id WHERE dept.id = 1;
DROP SCHEMA rt_joins CASCADE;
