#!/bin/bash
# t_driver_libpq.sh: builds regress/drivers/libpq/driver.c with gcc -lpq (strict warnings, ASan
# and UBSan) and runs it through the target with SCRAM over TLS (sslmode=require).
set -eu
S=${PGTIDE_SCRATCH:-$(mktemp -d)}
SRC=$PGTIDE_TOP/regress/drivers/libpq/driver.c
gcc -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
    -Wformat=2 -g -fsanitize=address,undefined -I"$(pg_config --includedir)" \
    -o "$S/driver" "$SRC" -lpq
PGPASSWORD=$PGTIDE_PASSWORD PGCONNECT_TIMEOUT=10 "$S/driver" \
    "host=$PGTIDE_HOST port=$PGTIDE_PORT user=$PGTIDE_USER dbname=$PGTIDE_DB sslmode=require"
