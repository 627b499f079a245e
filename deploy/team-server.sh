#!/usr/bin/env bash
# A shared MLflow tracking server for a team: runs and params in PostgreSQL, artifacts (the PNGs) in a
# folder the server itself serves, so clients need nothing but the server's URL.
#
#   deploy/team-server.sh start     # initdb (first time), start PostgreSQL, create database "mlflow",
#                                   # start `mlflow server`, wait until /health answers
#   deploy/team-server.sh status    # what is running, and the tracking URI to give the team
#   deploy/team-server.sh stop      # stop mlflow, then PostgreSQL (fast shutdown: commits are kept)
#
# Then, on every client:  workbench run spec.yaml --tracking-uri http://HOST:MLFLOW_PORT
#                    or:  export MLFLOW_TRACKING_URI=http://HOST:MLFLOW_PORT
# docs/scale.md explains each step, how to run this under systemd, and a managed PostgreSQL + S3.
#
# Configuration (environment variables, with their defaults):
#   WORKBENCH_SERVER_DIR  ~/.workbench/team-server   pgdata/, artifacts/, logs/, run/ (pid file, socket)
#   HOST                  127.0.0.1   interface mlflow listens on (0.0.0.0: every interface)
#   MLFLOW_PORT           5000
#   MLFLOW_WORKERS        4           worker processes
#   HTTP_SERVER           gunicorn    gunicorn (Flask app, sync workers) or uvicorn (MLflow's default, ASGI).
#                                     uvicorn with more than one worker leaves Nagle's algorithm on, so each
#                                     request on a kept-alive connection waits ~40 ms for a delayed ACK
#                                     (uvicorn issue #3149): 5-7x slower per call, measured in docs/scale.md
#   MLFLOW                mlflow      the mlflow executable (e.g. .venv/bin/mlflow); needs psycopg2
#   ALLOWED_HOSTS         (MLflow's default: localhost and private IPs) Host headers the server accepts;
#                         set it to the name clients use, e.g. 'mlflow.team.internal:*,localhost:*,127.0.0.1:*'
#                         (it replaces the default list; /health answers whatever the Host)
#   MLFLOW_SERVER_ARGS    extra `mlflow server` flags, word-split (e.g. "--expose-prometheus DIR"); CORS
#                         origins go in MLFLOW_SERVER_CORS_ALLOWED_ORIGINS (the flag is uvicorn-only)
#   ARTIFACTS_DESTINATION artifacts/ in the server dir; or s3://bucket/prefix, gs://..., etc.
#   PGPORT                5432        the local PostgreSQL's port; it listens on 127.0.0.1 only
#   BACKEND_STORE_URI     (unset)     use an existing/managed database instead of the local one,
#                                     e.g. postgresql+psycopg2://mlflow@db.internal:5432/mlflow (password in
#                                     ~/.pgpass); then no local PostgreSQL is created, started or stopped
#   START_TIMEOUT         180         seconds to wait for /health
#   MLFLOW_SERVER_ENABLE_JOB_EXECUTION  false  MLflow 3's job runner (LLM judges, trace rollups) starts 8
#                         more processes (~240 MB each); workbench never uses it. true: MLflow's default
set -euo pipefail

SERVER_DIR=${WORKBENCH_SERVER_DIR:-$HOME/.workbench/team-server}
HOST=${HOST:-127.0.0.1}
MLFLOW_PORT=${MLFLOW_PORT:-5000}
MLFLOW_WORKERS=${MLFLOW_WORKERS:-4}
HTTP_SERVER=${HTTP_SERVER:-gunicorn}
MLFLOW=${MLFLOW:-mlflow}
PGPORT=${PGPORT:-5432}
PG_LISTEN=127.0.0.1          # the database is for the mlflow server on this machine only
DB_NAME=mlflow DB_USER=mlflow
START_TIMEOUT=${START_TIMEOUT:-180}
ARTIFACTS_DESTINATION=${ARTIFACTS_DESTINATION:-$SERVER_DIR/artifacts}
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}

PGDATA=$SERVER_DIR/pgdata
LOGS=$SERVER_DIR/logs
RUN=$SERVER_DIR/run          # mlflow.pid and PostgreSQL's unix socket
MLFLOW_PID=$RUN/mlflow.pid
MLFLOW_LOG=$LOGS/mlflow.log
PG_LOG=$LOGS/postgres.log

die() { echo "team-server: error: $*" >&2; exit 1; }
say() { echo "team-server: $*"; }

local_postgres() { [ -z "${BACKEND_STORE_URI:-}" ]; }

# The folder holding initdb, pg_ctl and friends: pg_config's, else Debian's /usr/lib/postgresql/<version>/bin.
pg_bindir() {
    local dir
    if command -v pg_config >/dev/null 2>&1; then
        dir=$(pg_config --bindir 2>/dev/null || true)
        [ -n "$dir" ] && [ -x "$dir/initdb" ] && { echo "$dir"; return; }
    fi
    for dir in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
        [ -x "$dir/initdb" ] && { echo "$dir"; return; }
    done
    die "PostgreSQL's server programs (initdb, pg_ctl) are not installed. Install Debian's package with
    make postgres-deps      (or: sudo apt-get install postgresql)
or set BACKEND_STORE_URI=postgresql://user@host:port/db to use a PostgreSQL you already run."
}

# PostgreSQL refuses to run as root: as root, its programs run as the `postgres` user, which must own
# pgdata/ and be able to reach the server dir.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# True when http://HOST:PORT/health answers OK (curl if there is one, else mlflow's own Python).
healthy() {
    local url="http://$1:$MLFLOW_PORT/health"
    if command -v curl >/dev/null 2>&1; then
        [ "$(curl -fsS --max-time 2 "$url" 2>/dev/null)" = OK ]
    else
        python3 -c 'import sys, urllib.request as u; sys.exit(u.urlopen(sys.argv[1], timeout=2).read().strip() != b"OK")' \
            "$url" 2>/dev/null
    fi
}

client_host() { case $HOST in 0.0.0.0 | "::" | "") echo 127.0.0.1 ;; *) echo "$HOST" ;; esac; }

mlflow_pid() {
    local pid
    [ -f "$MLFLOW_PID" ] || return 1
    pid=$(cat "$MLFLOW_PID")
    kill -0 "$pid" 2>/dev/null || return 1
    # A stale pid file whose number now belongs to some other program does not count.
    if [ -r "/proc/$pid/cmdline" ] && ! grep -qa mlflow "/proc/$pid/cmdline"; then return 1; fi
    echo "$pid"
}

start_postgres() {
    local bin
    bin=$(pg_bindir)
    mkdir -p "$SERVER_DIR" "$LOGS" "$RUN"
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || die "running as root, but there is no 'postgres' user to run PostgreSQL as
(Debian's postgresql package creates it); run this script as an ordinary user instead"
        chown postgres: "$LOGS" "$RUN"
        runuser -u postgres -- test -w "$RUN" || die "the 'postgres' user cannot reach $SERVER_DIR: a parent
folder is not searchable by other users (e.g. a 0700 home or /tmp/pytest-of-root). Choose a
WORKBENCH_SERVER_DIR that user can reach, e.g. /srv/workbench or /var/lib/workbench"
    fi
    # The unix socket path (…/run/.s.PGSQL.<port>) must fit in 107 bytes.
    [ $(( ${#RUN} + 18 )) -le 107 ] || die "WORKBENCH_SERVER_DIR is too long for PostgreSQL's unix socket
path ($RUN/.s.PGSQL.$PGPORT exceeds 107 bytes); choose a shorter folder"

    if [ ! -f "$PGDATA/PG_VERSION" ]; then
        say "creating the PostgreSQL cluster in $PGDATA ($("$bin/postgres" --version))"
        mkdir -p "$PGDATA"
        [ "$(id -u)" = 0 ] && chown postgres: "$PGDATA"
        chmod 700 "$PGDATA"
        # trust: connections from this machine only (pg_hba.conf lists local, 127.0.0.1 and ::1 and
        # nothing else). A team server on a shared machine uses passwords: docs/scale.md.
        as_pg "$bin/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --no-locale \
            >>"$LOGS/initdb.log" 2>&1 || die "initdb failed; see $LOGS/initdb.log"
    fi
    if as_pg "$bin/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
        say "PostgreSQL is already running ($PGDATA)"
    else
        say "starting PostgreSQL on $PG_LISTEN:$PGPORT (log: $PG_LOG)"
        as_pg "$bin/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -w -t 60 \
            -o "-c listen_addresses=$PG_LISTEN -p $PGPORT -c unix_socket_directories='$RUN'" start \
            >/dev/null || die "PostgreSQL did not start; see $PG_LOG (is port $PGPORT in use? set PGPORT)"
    fi
    # The mlflow role and database, once. Connect over TCP as the cluster's superuser.
    local psql=("$bin/psql" -h "$PG_LISTEN" -p "$PGPORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -XqtA)
    if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")" != 1 ]; then
        "${psql[@]}" -c "CREATE ROLE $DB_USER LOGIN" >/dev/null
    fi
    if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != 1 ]; then
        say "creating database $DB_NAME"
        "${psql[@]}" -c "CREATE DATABASE $DB_NAME OWNER $DB_USER ENCODING 'UTF8' TEMPLATE template0" >/dev/null
    fi
}

start_mlflow() {
    # +psycopg2: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, which workbench does not install.
    local backend=${BACKEND_STORE_URI:-postgresql+psycopg2://$DB_USER@$PG_LISTEN:$PGPORT/$DB_NAME}
    local pid
    if pid=$(mlflow_pid); then
        healthy "$(client_host)" || die "mlflow (pid $pid) is running but /health does not answer; see $MLFLOW_LOG"
        say "mlflow is already running (pid $pid)"
        return
    fi
    command -v "$MLFLOW" >/dev/null 2>&1 || die "no '$MLFLOW' executable: install workbench (it depends on
mlflow) with its team-server extra, pip install 'workbench[team-server]', or set MLFLOW=/path/to/mlflow"
    healthy "$(client_host)" && die "another server already answers on $(client_host):$MLFLOW_PORT; stop it
or choose another MLFLOW_PORT"
    mkdir -p "$LOGS" "$RUN"
    case $ARTIFACTS_DESTINATION in *://*) ;; *) mkdir -p "$ARTIFACTS_DESTINATION" ;; esac
    local args=(server --backend-store-uri "$backend"
                --serve-artifacts --artifacts-destination "$ARTIFACTS_DESTINATION"
                --host "$HOST" --port "$MLFLOW_PORT" --workers "$MLFLOW_WORKERS")
    case $HTTP_SERVER in
        # An access line per request in the log, like uvicorn's; PNG uploads get 120 s, not 30.
        gunicorn) args+=(--gunicorn-opts "--access-logfile - --timeout 120") ;;
        uvicorn) ;;
        *) die "HTTP_SERVER must be gunicorn or uvicorn, not '$HTTP_SERVER'" ;;
    esac
    # Read by both servers' security middleware (the --allowed-hosts flag works with uvicorn only).
    [ -n "${ALLOWED_HOSTS:-}" ] && export MLFLOW_SERVER_ALLOWED_HOSTS=$ALLOWED_HOSTS
    # shellcheck disable=SC2206  # word splitting is the point: a list of extra flags
    [ -n "${MLFLOW_SERVER_ARGS:-}" ] && args+=($MLFLOW_SERVER_ARGS)
    say "starting mlflow server on $HOST:$MLFLOW_PORT, $MLFLOW_WORKERS $HTTP_SERVER workers (log: $MLFLOW_LOG)"
    # Its own session (process group), so that `stop` ends mlflow and every uvicorn worker together.
    {
        echo "--- $(date '+%F %T') $MLFLOW ${args[*]}" | sed -E 's#(://[^:/@]*):[^@]*@#\1:***@#'
    } >>"$MLFLOW_LOG"
    setsid "$MLFLOW" "${args[@]}" >>"$MLFLOW_LOG" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$MLFLOW_PID"
    local waited=0
    until healthy "$(client_host)"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$MLFLOW_PID"
            if tail -n 5 "$MLFLOW_LOG" | grep -q "No module named 'psycopg"; then
                die "mlflow cannot load PostgreSQL's driver: install it next to mlflow with
pip install 'workbench[team-server]' (psycopg2-binary), or use postgresql+psycopg:// with psycopg 3"
            fi
            die "mlflow server exited while starting; the end of $MLFLOW_LOG:
$(tail -n 15 "$MLFLOW_LOG")"
        fi
        [ "$waited" -lt "$START_TIMEOUT" ] || die "mlflow server (pid $pid) did not answer /health within \
${START_TIMEOUT}s; see $MLFLOW_LOG (it is left running: run '$0 stop')"
        sleep 1
        waited=$((waited + 1))
    done
    say "ready: tracking URI http://$(client_host):$MLFLOW_PORT (${waited}s)"
}

stop_mlflow() {
    local pid
    if ! pid=$(mlflow_pid); then
        rm -f "$MLFLOW_PID"
        say "mlflow is not running"
        return
    fi
    say "stopping mlflow (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
    for _ in $(seq 150); do  # 30 s
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null
    # Workers that outlived the parent share its process group: end them too.
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$MLFLOW_PID"
}

stop_postgres() {
    local bin
    [ -f "$PGDATA/PG_VERSION" ] || { say "no PostgreSQL cluster in $PGDATA"; return; }
    bin=$(pg_bindir)
    if as_pg "$bin/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
        say "stopping PostgreSQL"
        as_pg "$bin/pg_ctl" -D "$PGDATA" -m fast -w -t 60 stop >/dev/null
    else
        say "PostgreSQL is not running"
    fi
}

status() {
    local rc=0 pid
    if local_postgres; then
        if [ -f "$PGDATA/PG_VERSION" ] && as_pg "$(pg_bindir)/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
            say "PostgreSQL: running on $PG_LISTEN:$PGPORT ($PGDATA)"
        else
            say "PostgreSQL: not running"; rc=1
        fi
    else
        say "PostgreSQL: external (BACKEND_STORE_URI)"
    fi
    if pid=$(mlflow_pid) && healthy "$(client_host)"; then
        say "mlflow: running (pid $pid), tracking URI http://$(client_host):$MLFLOW_PORT"
    else
        say "mlflow: not running"; rc=1
    fi
    return "$rc"
}

case ${1:-} in
    start)
        local_postgres && start_postgres
        start_mlflow
        ;;
    stop)
        stop_mlflow
        if local_postgres; then stop_postgres; fi
        ;;
    status) status ;;
    *)
        echo "usage: $0 start|stop|status   (configuration: see the top of this file)" >&2
        exit 2
        ;;
esac
