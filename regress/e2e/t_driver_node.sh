#!/bin/bash
# t_driver_node.sh: node-postgres through the target. Installs the locked packages into
# regress/drivers/node/node_modules (npm ci) when they are missing, then runs driver.js.
set -eu
D=$PGTIDE_TOP/regress/drivers/node
if [ ! -d "$D/node_modules/pg" ] || [ ! -d "$D/node_modules/pg-copy-streams" ]; then
    (cd "$D" && npm ci --no-audit --no-fund --loglevel=error)
fi
exec node "$D/driver.js"
