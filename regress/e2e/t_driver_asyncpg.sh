#!/bin/bash
# t_driver_asyncpg.sh: runs regress/drivers/python/drv_asyncpg.py against the target.
exec /usr/bin/python3 "$PGTIDE_TOP/regress/drivers/python/drv_asyncpg.py"
