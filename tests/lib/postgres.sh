# shellcheck shell=bash
# A throwaway PostgreSQL server for the tests: Debian's package, run as a non-root user
# from a temp dir, on a free loopback port, with its socket in that dir. No containers.
#
#   source tests/lib/postgres.sh
#   kg_pg_start                  # installs PostgreSQL if needed, starts it, exports:
#                                #   KG_TEST_PG_URL  postgres://kgtest:…@127.0.0.1:PORT/postgres
#                                #   KG_REQUIRE_PG=1      (tests needing PostgreSQL fail, not skip)
#                                #   KG_TEST_PG_CA   the server's self-signed certificate
#                                #     (TLS is on when the openssl command exists; else unset)
#   trap kg_pg_stop EXIT         # stops it and removes its dir
#
# KG_TEST_PG_URL is a maintenance URL: each test creates (and drops) its own
# database with it. (KG_, not KEYGATE_: keygate refuses to start beside an unknown
# KEYGATE_* variable, and every keygate the tests start inherits these.) The password is random per run and only ever in that variable.
# Knobs: KG_PG_USER (the OS user the server runs as when we are root; default kgpg);
# KG_PG_DURABLE=1: fsync and full_page_writes on (PostgreSQL's defaults), for the
# benchmark (tests/bench/run.sh), whose figures must be those of a real server.
# Otherwise the server runs with fsync off: it is a test fixture (keygate nodes are
# killed in the tests, PostgreSQL never is), and the suite's budget is tight.

KG_PG_DIR=""
KG_PG_PORT=""
KG_PG_BIN=""

kg_pg_log() { printf '[postgres] %s\n' "$*" >&2; }

# The newest installed PostgreSQL's bin dir, or nothing.
kg_pg_find_bin() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [[ -n "$d" && -x "$d/initdb" ]]; then printf '%s\n' "$d"; fi
}

# Installs Debian's postgresql package unless a server is already installed.
kg_pg_install() {
  KG_PG_BIN="$(kg_pg_find_bin)"
  [[ -n "$KG_PG_BIN" ]] && return 0
  kg_pg_log "installing Debian's postgresql package"
  local sudo=""
  [[ "$(id -u)" != "0" ]] && sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
  KG_PG_BIN="$(kg_pg_find_bin)"
  [[ -n "$KG_PG_BIN" ]] || { kg_pg_log "no initdb after installing postgresql"; return 1; }
}

# Runs a command as the server's user (PostgreSQL refuses to run as root).
kg_pg_as() {
  if [[ "$(id -u)" == "0" ]]; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u "${KG_PG_USER:-kgpg}" -- "$@"
    else
      su -s /bin/sh "${KG_PG_USER:-kgpg}" -c "$(printf '%q ' "$@")"
    fi
  else
    "$@"
  fi
}

kg_pg_port_free() {
  ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

kg_pg_start() {
  kg_pg_install || return 1
  if [[ "$(id -u)" == "0" ]]; then
    local user="${KG_PG_USER:-kgpg}"
    # Another run may be creating the same user right now: only its existence matters.
    id "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user" 2>/dev/null || true
    id "$user" >/dev/null 2>&1 || { kg_pg_log "could not create user $user"; return 1; }
  fi
  KG_PG_DIR="$(mktemp -d /tmp/kg-pg.XXXXXX)"
  chmod 700 "$KG_PG_DIR"
  [[ "$(id -u)" == "0" ]] && chown "${KG_PG_USER:-kgpg}" "$KG_PG_DIR"
  local password
  password="$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  printf '%s\n' "$password" >"$KG_PG_DIR/pw"
  [[ "$(id -u)" == "0" ]] && chown "${KG_PG_USER:-kgpg}" "$KG_PG_DIR/pw"
  chmod 600 "$KG_PG_DIR/pw"
  kg_pg_as "$KG_PG_BIN/initdb" -D "$KG_PG_DIR/data" -U kgtest --pwfile="$KG_PG_DIR/pw" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-locale >"$KG_PG_DIR/initdb.log" 2>&1 \
    || { kg_pg_log "initdb failed:"; cat "$KG_PG_DIR/initdb.log" >&2; return 1; }
  rm -f "$KG_PG_DIR/pw"
  # TLS, so the tests can connect with sslmode=require and verify-full: a self-signed
  # certificate for 127.0.0.1, trusted by nothing but the tests that are handed it.
  local tls_opts=""
  unset KG_TEST_PG_CA
  if command -v openssl >/dev/null 2>&1 && openssl req -x509 -newkey rsa:2048 -nodes -days 2 \
    -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$KG_PG_DIR/server.key" -out "$KG_PG_DIR/server.crt" >/dev/null 2>&1; then
    chmod 600 "$KG_PG_DIR/server.key"
    chmod 644 "$KG_PG_DIR/server.crt"
    [[ "$(id -u)" == "0" ]] && chown "${KG_PG_USER:-kgpg}" "$KG_PG_DIR/server.key" "$KG_PG_DIR/server.crt"
    tls_opts="-c ssl=on -c ssl_cert_file=$KG_PG_DIR/server.crt -c ssl_key_file=$KG_PG_DIR/server.key"
  fi
  local durability="-c fsync=off -c full_page_writes=off"
  [[ "${KG_PG_DURABLE:-}" == "1" ]] && durability="-c fsync=on -c full_page_writes=on -c synchronous_commit=on"
  local try port
  for try in $(seq 1 20); do
    port=$((20000 + RANDOM % 40000))
    kg_pg_port_free "$port" || continue
    if kg_pg_as "$KG_PG_BIN/pg_ctl" -D "$KG_PG_DIR/data" -l "$KG_PG_DIR/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$KG_PG_DIR \
          -c max_connections=400 $durability $tls_opts" start >/dev/null; then
      KG_PG_PORT="$port"
      break
    fi
  done
  if [[ -z "$KG_PG_PORT" ]]; then
    kg_pg_log "PostgreSQL did not start:"
    tail -n 20 "$KG_PG_DIR/server.log" >&2 || true
    return 1
  fi
  export KG_TEST_PG_URL="postgres://kgtest:${password}@127.0.0.1:${KG_PG_PORT}/postgres"
  export KG_REQUIRE_PG=1
  if [[ -n "$tls_opts" ]]; then export KG_TEST_PG_CA="$KG_PG_DIR/server.crt"; fi
  kg_pg_log "PostgreSQL ($(basename "$(dirname "$KG_PG_BIN")")) on 127.0.0.1:$KG_PG_PORT, dir $KG_PG_DIR"
}

kg_pg_stop() {
  [[ -n "$KG_PG_DIR" ]] || return 0
  if [[ -n "$KG_PG_PORT" ]]; then
    kg_pg_as "$KG_PG_BIN/pg_ctl" -D "$KG_PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$KG_PG_DIR"
  KG_PG_DIR=""
  KG_PG_PORT=""
}
