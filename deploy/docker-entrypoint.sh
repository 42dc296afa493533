#!/bin/sh
# Secrets mounted as files (compose secrets, Kubernetes secret volumes): for every variable
# NAME_FILE in the environment, export NAME with the content of that file, then run the command.
# E.g. AUDITOR_DB_URL_FILE=/run/secrets/auditor_db_url sets AUDITOR_DB_URL.
set -eu
for name in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)_FILE=.*$/\1/p'); do
    file=$(printenv "${name}_FILE")
    if [ ! -r "$file" ]; then
        echo "error: ${name}_FILE names $file, which cannot be read -- fix: mount the secret there" >&2
        exit 2
    fi
    value=$(cat "$file")
    export "$name=$value"
    unset "${name}_FILE"
done
exec "$@"
