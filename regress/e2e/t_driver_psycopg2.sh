#!/bin/bash
# t_driver_psycopg2.sh: runs regress/drivers/python/drv_psycopg2.py against the target.
exec /usr/bin/python3 "$PGTIDE_TOP/regress/drivers/python/drv_psycopg2.py"
