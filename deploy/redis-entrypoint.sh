#!/bin/sh
# Starts redis-server from deploy/redis.conf with deploy/users.acl, adding each user's
# password from the environment (docker-compose.yml's redis service runs this).
#
# The shipped users.acl has no passwords (nobody can log in until an operator adds
# them). This copies it to $ACL_TARGET with "#<sha256>" appended to each user whose
# REDIS_PASSWORD_<USER> variable is set (user name upper-cased, "-" as "_"; e.g.
# REDIS_PASSWORD_COORDINATOR_WORKER), so no clear-text password is written to disk.
# Arguments are passed on to redis-server after the file's settings and override them.
set -eu

conf=${REDIS_CONF:-/etc/redis/redis.conf}
source_acl=${ACL_SOURCE:-/etc/redis/users.acl}
target_acl=${ACL_TARGET:-/data/users.acl}
data_dir=${REDIS_DATA_DIR:-/data}

umask 077
: >"$target_acl.tmp"
while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
    "user default "*) ;; # stays off without a password (see deploy/README.md)
    "user "*)
        user=${line#user }
        user=${user%% *}
        var=REDIS_PASSWORD_$(printf %s "$user" | tr 'a-z-' 'A-Z_')
        secret=$(printenv "$var" || true)
        if [ -n "$secret" ]; then
            line="$line #$(printf %s "$secret" | sha256sum | cut -d ' ' -f 1)"
        fi
        ;;
    esac
    printf '%s\n' "$line" >>"$target_acl.tmp"
done <"$source_acl"
mv "$target_acl.tmp" "$target_acl"

# In a container Redis must listen on the container's network, not only loopback.
exec redis-server "$conf" --aclfile "$target_acl" --dir "$data_dir" --bind 0.0.0.0 "$@"
