#!/bin/bash
# t_driver_psycopg3.sh: runs regress/drivers/python/drv_psycopg3.py against the target.
exec /usr/bin/python3 "$PGTIDE_TOP/regress/drivers/python/drv_psycopg3.py"
