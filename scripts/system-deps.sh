#!/usr/bin/env bash
# System packages the services stack and its tests need, from Debian's archive, installed when
# missing (as root, with apt-get). Never starts a system service: the project starts its own
# Postgres (weaver.deploy.postgres) in a project-local folder. Prints one line per problem.
set -u

need=()
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || need+=(postgresql)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# chromium: the what-if report test renders the HTML report headless.
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# wal2json for the Postgres CDC tests (logical decoding), matching the server's major version.
major=$(ls /usr/lib/postgresql 2>/dev/null | sort -V | tail -n 1)
[ -n "$major" ] || major=$(apt-cache policy postgresql 2>/dev/null | sed -n 's/.*Candidate: \([0-9]*\).*/\1/p')
[ -n "$major" ] && ! ls /usr/lib/postgresql/"$major"/lib/wal2json.so >/dev/null 2>&1 && need+=("postgresql-$major-wal2json")
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "warning: missing system packages: ${need[*]} - run: sudo apt-get install -y ${need[*]} (tests that need them will fail with that message)"
  exit 0
fi

# policy-rc.d exit 101 = "do not start services": the package's own Postgres cluster stays down.
own_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
fi
export DEBIAN_FRONTEND=noninteractive
ok=1
apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || ok=0
[ $own_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
if command -v pg_lsclusters >/dev/null 2>&1; then
  pg_lsclusters --no-header 2>/dev/null | awk '$4 ~ /^online/ {print $1, $2}' | while read -r v c; do
    pg_ctlcluster "$v" "$c" stop -m fast >/dev/null 2>&1 || true
  done
fi
if [ $ok = 0 ]; then
  echo "warning: apt-get could not install ${need[*]} - install them by hand (tests that need them will fail with that message)"
fi
exit 0
