#!/bin/bash
# t_driver_jdbc.sh: compiles regress/drivers/jdbc/DriverTest.java against Debian's PostgreSQL
# JDBC driver (libpostgresql-jdbc-java) and runs it through the target (sslmode=require).
set -eu
S=${PGTIDE_SCRATCH:-$(mktemp -d)}
JAR=/usr/share/java/postgresql.jar
[ -r "$JAR" ] || { echo "FAIL: $JAR missing (regress/setup-deps.sh installs it)"; exit 1; }
javac -d "$S" -cp "$JAR" "$PGTIDE_TOP/regress/drivers/jdbc/DriverTest.java"
exec java -cp "$S:$JAR" DriverTest
