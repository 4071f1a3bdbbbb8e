#!/usr/bin/env bash
# Load comparison: Portcullis against an nginx origin, nginx proxy_pass and haproxy
# with JWT verification, all on 127.0.0.1, in one run.
#
#   benches/load.sh [--quick] [--tls] [--logs off|on|both] [--duration SECONDS] [--repeat N]
#                   [--revoked N] [--max-other PCT] [--rate N] [--no-rate] [--no-build] [--keep]
#
# Each server runs one worker pinned to core 0 (`taskset -c 0`); wrk runs on core 1
# (`-t1 -c64`, keep-alive). Scenarios:
#   a) nginx origin directly (serves a 1 KiB file)
#   b) nginx proxy_pass to the origin, upstream keepalive
#   c) haproxy: ES256 JWT verification (jwt_verify against a PEM public key), expiry,
#      audience, binding cookie hash, and revocation lookups in two maps (sid, user)
#   d) Portcullis with a session obtained through its real login flow (binding cookie on)
#   e) Portcullis unauthenticated: the 401 JSON path
# Every proxy runs twice (--logs both, the default): access logs off, then on as operators
# run them: nginx `access_log ... combined buffer=64k flush=1s`, haproxy `option httplog`
# to stdout (one line per request, to a file), Portcullis' own default access log (text to
# stderr, to a file). The proxies are restarted between the two passes (the origin is not);
# each pass gets its own table with ratios to nginx in the same mode.
# Each run waits for the machine to be idle (bounded), is repeated (median kept; a run
# during which other processes took more than --max-other % of the two cores, default 10,
# is done again, at most twice), and the table gives requests/s, p50/p99 latency and
# proxy CPU per request (and the kernel's share of it: stime), each also as a ratio to
# nginx proxy_pass. --tls repeats the proxies over TLS with one self-signed certificate.
# Then a fixed-rate pass (skipped with --no-rate), in the last log mode, offers --rate
# requests/s in total (default 5000) to a), b), c) and d) (and their TLS variants with --tls) with oha
# (`-c64 -q RATE --latency-correction`, latency counted from each request's scheduled
# start, so a stalled server is not hidden), same pinning, headers, idle wait, --repeat
# and --duration (after a 1 s warm-up in the same run, left out of the figures), and
# prints p50/p99/p99.9, the latency each proxy adds over the direct origin, the achieved
# rate and the share of non-2xx responses.
# Tools: nginx, haproxy, wrk, jq, sqlite3 and the rest from Debian's packages (apt-get) when missing;
# Debian has no oha, so it comes from crates.io (`cargo install oha --locked`, a few
# minutes) into cargo's bin directory, which is added to PATH.
# The whole script is one block, read before it runs: editing the file during a run is safe.
{
set -euo pipefail

QUICK=0
TLS=0
DURATION=8
REPEAT=3
REVOKED=1000
KEEP=0
BUILD=1
IDLE_WAIT=60       # seconds at most to wait for an idle machine before each run
IDLE_PCT=85        # both cores at least this idle over one second
MAX_OTHER=10       # a run during which other processes used more CPU (% of both cores)...
RETRIES=2          # ...is repeated up to this many times
RATE=5000          # fixed-rate pass: requests/s in total (oha -q), over all 64 connections
RATE_RUN=1
LOG_MODES="off on"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --tls) TLS=1 ;;
        --logs)
            case "$2" in
                off|on) LOG_MODES="$2" ;;
                both) LOG_MODES="off on" ;;
                *) echo "--logs takes off, on or both" >&2; exit 2 ;;
            esac
            shift ;;
        --duration) DURATION="$2"; shift ;;
        --repeat) REPEAT="$2"; shift ;;
        --revoked) REVOKED="$2"; shift ;;
        --keep) KEEP=1 ;;
        --no-build) BUILD=0 ;;
        --max-other) MAX_OTHER="$2"; shift ;;
        --rate) RATE="$2"; shift ;;
        --no-rate) RATE_RUN=0 ;;
        -h|--help) sed -n '2,/^{$/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option: $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
if [ "$QUICK" = 1 ]; then
    DURATION=3; REPEAT=1; IDLE_WAIT=15; RETRIES=1
fi
if [ "$DURATION" -gt 10 ]; then
    echo "--duration is capped at 10 s" >&2; DURATION=10
fi
case "$RATE" in
    ''|*[!0-9]*|0) echo "--rate needs a positive whole number of requests/s" >&2; exit 2 ;;
esac

export PATH="$PATH:/usr/sbin:/sbin"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf 'load.sh: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- tools
install_tools() {
    local missing=()
    command -v nginx >/dev/null || missing+=(nginx)
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v wrk >/dev/null || missing+=(wrk)
    command -v curl >/dev/null || missing+=(curl)
    command -v openssl >/dev/null || missing+=(openssl)
    command -v taskset >/dev/null || missing+=(util-linux)
    command -v ss >/dev/null || missing+=(iproute2)
    command -v pgrep >/dev/null || missing+=(procps)
    # The fixed-rate pass reads oha's JSON report with jq and its per-request records with sqlite3.
    if [ "$RATE_RUN" = 1 ]; then
        command -v jq >/dev/null || missing+=(jq)
        command -v sqlite3 >/dev/null || missing+=(sqlite3)
    fi
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]} (Debian packages)"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    # RUNLEVEL=1 keeps the packages' init scripts from starting system-wide services.
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq \
        -o DPkg::Lock::Timeout=300 "${missing[@]}" >/dev/null
}
# Debian has no oha package: it is built from crates.io into cargo's bin directory (the
# user's, not system-wide), and that directory goes on PATH since a login shell may not
# have it there.
install_oha() {
    local bin="${CARGO_HOME:-$HOME/.cargo}/bin"
    case ":$PATH:" in *":$bin:"*) ;; *) export PATH="$PATH:$bin" ;; esac
    if ! command -v oha >/dev/null; then
        command -v cargo >/dev/null || die "oha is missing and there is no cargo to install it with (or pass --no-rate)"
        log "installing oha (cargo install oha --locked, from crates.io into $bin; a few minutes)"
        cargo install oha --locked --quiet || die "cargo install oha --locked failed (or pass --no-rate)"
        command -v oha >/dev/null || die "oha was installed but is not on PATH ($bin)"
    fi
    # Older oha releases had -j/--json instead of --output-format, and no --db-url; the
    # parsing in rate_case follows oha 1.16 (its JSON report and its SQLite table).
    local help opt; help=$(oha --help 2>&1)
    for opt in --output-format --latency-correction --db-url; do
        grep -q -- "$opt" <<<"$help" && continue
        die "$(command -v oha) ($(oha --version)) has no $opt: cargo install oha --locked --force (or pass --no-rate)"
    done
}
install_tools
[ "$RATE_RUN" = 0 ] || install_oha
[ "$(nproc)" -ge 2 ] || die "needs 2 cores (servers on core 0, wrk on core 1)"

# ---------------------------------------------------------------- build
if [ "$BUILD" = 1 ]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
fi
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
BIN="$TARGET_DIR/release/portcullis"
[ -x "$BIN" ] || die "no $BIN"

# ---------------------------------------------------------------- workspace, cleanup
WORK="$(mktemp -d -t portcullis-load.XXXXXX)"
PIDS=()
cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    sleep 0.3
    for p in "${PIDS[@]}"; do
        kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    if [ "$KEEP" = 1 ]; then
        echo "kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

used_ports=" "
free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$(( 20000 + RANDOM % 20000 ))
        case "$used_ports" in *" $p "*) continue ;; esac
        if ! ss -Htln "sport = :$p" | grep -q .; then
            used_ports="$used_ports$p "
            echo "$p"; return 0
        fi
    done
    die "no free port"
}

wait_port() { # port [seconds]
    local i
    for i in $(seq 1 $(( ${2:-20} * 10 ))); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

ORIGIN_PORT=$(free_port); NGINX_PORT=$(free_port); HAP_PORT=$(free_port)
PC_HTTP=$(free_port); PC_TLS=$(free_port); PC_CTRL=$(free_port)
ORIGIN_TLS=$(free_port); NGINX_TLS=$(free_port); HAP_TLS=$(free_port)
APP_HOST=app.localhost
AUTH_HOST=auth.localhost

# ---------------------------------------------------------------- Portcullis config
mkdir -p "$WORK/pc"
DEMO_EMAIL=demo@example.com
DEMO_PW="portcullis-demo"
HASH="$(printf '%s' "$DEMO_PW" | "$BIN" hash-password)"
pc_config() { # off|on: the access log; the rest of the log stays at warn either way
    local access=false
    [ "$1" = on ] && access=true
    cat >"$WORK/pc/gateway.toml" <<EOF
[gateway]
listen = "127.0.0.1:$PC_TLS"
http_listen = "127.0.0.1:$PC_HTTP"
auth_domain = "$AUTH_HOST"
state_dir = "state"
node_id = "load-1"

[session]
global_duration = "24h"
relogin_lockout = "60s"

[control]
listen = "127.0.0.1:$PC_CTRL"
[[control.admin]]
name = "ops"
token_file = "state/admin.token"

[log]
level = "warn"
access_log = $access

[[app]]
name = "bench"
hosts = ["$APP_HOST"]
origin = "http://127.0.0.1:$ORIGIN_PORT"
binding_cookie = true
allow_emails = ["*@example.com"]

[[user]]
email = "$DEMO_EMAIL"
password_hash = "$HASH"
groups = ["staff"]
EOF
    "$BIN" --config "$WORK/pc/gateway.toml" check >/dev/null || die "generated config refused"
}
FIRST_MODE=${LOG_MODES%% *}
pc_config "$FIRST_MODE"

start_bg() { # name cmd...: starts on core 0, records the pid in PID_<name>
    local name="$1"; shift
    taskset -c 0 "$@" >"$WORK/$name.out" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    printf -v "PID_$name" '%s' "$pid"
}

start_portcullis() { # its stderr (the access log when on) goes to a file, as operators redirect it
    log "starting Portcullis (TOKIO_WORKER_THREADS=1)"
    (cd "$WORK/pc" && exec env TOKIO_WORKER_THREADS=1 taskset -c 0 "$BIN" --config "$WORK/pc/gateway.toml" run) \
        >>"$WORK/portcullis.out" 2>&1 &
    PID_portcullis=$!; PIDS+=("$PID_portcullis")
    wait_port "$PC_HTTP" 30 || { cat "$WORK/portcullis.out" >&2; die "Portcullis did not start"; }
    # How the runtime honoured TOKIO_WORKER_THREADS=1: tokio worker threads, or none when the
    # binary runs a current-thread scheduler on its main thread.
    workers=$(cat /proc/"$PID_portcullis"/task/*/comm 2>/dev/null | grep -c '^tokio-r' || true)
    threads=$(ls /proc/"$PID_portcullis"/task | wc -l)
    if [ "$workers" = 0 ]; then
        workers="a current-thread runtime on the main thread ($threads threads in all)"
    else
        workers="$workers tokio worker thread(s) ($threads threads in all)"
    fi
}
# Portcullis first: it writes the self-signed certificate the TLS mode shares.
start_portcullis
CERT="$WORK/pc/certs/gateway.crt"; KEY="$WORK/pc/certs/gateway.key"

# ---------------------------------------------------------------- nginx origin and proxy
mkdir -p "$WORK/origin/www" "$WORK/nginx"
head -c 1024 /dev/zero | tr '\0' 'x' >"$WORK/origin/www/index.html"
# nginx workers run as an unprivileged user when started by root: let them read the file.
chmod a+rx "$WORK" "$WORK/origin" "$WORK/origin/www"; chmod a+r "$WORK/origin/www/index.html"
nginx_common() { # dir [off|on]: on = the buffered access log operators use
    local access="access_log off;"
    [ "${2:-off}" = on ] && access="access_log $1/access.log combined buffer=64k flush=1s;"
    cat <<EOF
worker_processes 1;
daemon off;
master_process on;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 4096; }
http {
    $access
    default_type text/html;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path $1/tmp_body;
    proxy_temp_path $1/tmp_proxy;
    fastcgi_temp_path $1/tmp_fastcgi;
    uwsgi_temp_path $1/tmp_uwsgi;
    scgi_temp_path $1/tmp_scgi;
EOF
}
{
    nginx_common "$WORK/origin"
    cat <<EOF
    server {
        listen 127.0.0.1:$ORIGIN_PORT default_server;
        listen 127.0.0.1:$ORIGIN_TLS ssl default_server;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        root $WORK/origin/www;
        location / { index index.html; }
    }
}
EOF
} >"$WORK/origin/nginx.conf"
nginx_proxy_config() { # off|on
    nginx_common "$WORK/nginx" "$1"
    cat <<EOF
    upstream origin {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT default_server;
        listen 127.0.0.1:$NGINX_TLS ssl default_server;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$remote_addr;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
EOF
}
nginx_proxy_config "$FIRST_MODE" >"$WORK/nginx/nginx.conf"
for d in origin nginx; do
    nginx -t -q -c "$WORK/$d/nginx.conf" -p "$WORK/$d" -e "$WORK/$d/error.log" \
        || die "nginx config $d refused"
done
log "starting nginx origin (:$ORIGIN_PORT) and nginx proxy (:$NGINX_PORT)"
start_bg origin nginx -c "$WORK/origin/nginx.conf" -p "$WORK/origin" -e "$WORK/origin/error.log"
start_bg nginx nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -e "$WORK/nginx/error.log"
wait_port "$ORIGIN_PORT" || die "nginx origin did not start"
wait_port "$NGINX_PORT" || die "nginx proxy did not start"

# ---------------------------------------------------------------- login through Portcullis
log "logging in through Portcullis' login flow"
JAR="$WORK/jar.txt"
RES=(--resolve "$APP_HOST:$PC_TLS:127.0.0.1" --resolve "$AUTH_HOST:$PC_TLS:127.0.0.1")
# The browser's first navigation: app -> auth domain -> login form.
form_url=$(curl -sSk "${RES[@]}" -c "$JAR" -b "$JAR" -L --max-redirs 10 \
    -H 'Accept: text/html,application/xhtml+xml' -o "$WORK/form.html" \
    -w '%{url_effective}' "https://$APP_HOST:$PC_TLS/")
field() { sed -n "s/.*name=\"$1\" value=\"\([^\"]*\)\".*/\1/p" "$WORK/form.html" | head -1 | sed 's/&amp;/\&/g; s/&quot;/"/g; s/&#39;/'"'"'/g'; }
CSRF=$(field csrf); RETURN_TO=$(field return_to)
[ -n "$CSRF" ] || die "no csrf field in the login form at $form_url"
final=$(curl -sSk "${RES[@]}" -c "$JAR" -b "$JAR" -L --max-redirs 10 \
    -H 'Accept: text/html' -H "Origin: https://$AUTH_HOST:$PC_TLS" \
    --data-urlencode "csrf=$CSRF" --data-urlencode "email=$DEMO_EMAIL" \
    --data-urlencode "password=$DEMO_PW" --data-urlencode "return_to=$RETURN_TO" \
    -o "$WORK/landed.html" -w '%{http_code} %{url_effective}' "https://$AUTH_HOST:$PC_TLS/login")
case "$final" in
    "200 https://$APP_HOST:$PC_TLS/"*) ;;
    *) tail -5 "$WORK/portcullis.out" >&2; die "login flow ended at: $final (Portcullis log above)" ;;
esac
jar_get() { awk -v h="$APP_HOST" -v n="$1" '($1==h || $1=="#HttpOnly_"h) && $6==n {print $7}' "$JAR" | tail -1; }
APP_TOKEN=$(jar_get portcullis_app); BINDING=$(jar_get portcullis_binding)
[ -n "$APP_TOKEN" ] && [ -n "$BINDING" ] || die "no portcullis_app / portcullis_binding cookie after login"
COOKIE="portcullis_app=$APP_TOKEN; portcullis_binding=$BINDING"

# Revocation entries, so no lookup meets an empty set (haproxy's maps get the same keys).
ADMIN_TOKEN=$(tr -d '\n' <"$WORK/pc/state/admin.token")
mkdir -p "$WORK/haproxy"
: >"$WORK/haproxy/sids.map"; : >"$WORK/haproxy/users.map"
if [ "$REVOKED" -gt 0 ]; then
    log "revoking $REVOKED unrelated sessions and users on the control port"
    now=$(date +%s)
    {
        for i in $(seq 1 "$REVOKED"); do
            if [ $((i % 2)) = 0 ]; then
                scope=session; target="revoked-sid-$i"
                echo "$target $now" >>"$WORK/haproxy/sids.map"
            else
                scope=user; target="revoked-user-$i@example.com"
                echo "$target $now" >>"$WORK/haproxy/users.map"
            fi
            printf 'url = "http://127.0.0.1:%s/v1/revocations"\n' "$PC_CTRL"
            printf 'header = "Authorization: Bearer %s"\nheader = "Content-Type: application/json"\n' "$ADMIN_TOKEN"
            printf 'data = "{\\"scope\\":\\"%s\\",\\"target\\":\\"%s\\",\\"reason\\":\\"load-test\\"}"\n' "$scope" "$target"
            printf 'output = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n'
            if [ "$i" -lt "$REVOKED" ]; then echo next; fi
        done
    } >"$WORK/revoke.curl"
    bad=$(curl -sS -K "$WORK/revoke.curl" | grep -vc '^200$' || true)
    [ "$bad" = 0 ] || die "$bad revocation calls failed"
fi

pc_status() { # extra curl args...: status of GET / on the plaintext listener
    curl -s -o /dev/null -w '%{http_code}' -H "Host: $APP_HOST" "$@" "http://127.0.0.1:$PC_HTTP/"
}
[ "$(pc_status -H "Cookie: $COOKIE")" = 200 ] || die "the logged-in session is not accepted on the plaintext listener"
[ "$(pc_status -H 'Accept: application/json')" = 401 ] || die "the unauthenticated request did not get 401"

# ---------------------------------------------------------------- haproxy
openssl pkey -in "$(ls "$WORK"/pc/state/keys/*.pem | head -1)" -pubout -out "$WORK/haproxy/pub.pem" 2>/dev/null
cat "$CERT" "$KEY" >"$WORK/haproxy/tls.pem"
HAP_MODE=jwt
hap_config() { # jwt|plain off|on: on = one httplog line per request to stdout (a file)
    local glog="log stderr format raw local0 err" dlog=""
    if [ "${2:-off}" = on ]; then
        glog="log stdout format raw local0 info"
        dlog=$'    log global\n    option httplog'
    fi
    cat <<EOF
global
    nbthread 1
    maxconn 4096
    $glog
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
$dlog
frontend fe
    bind 127.0.0.1:$HAP_PORT
    bind 127.0.0.1:$HAP_TLS ssl crt $WORK/haproxy/tls.pem
    option forwardfor
EOF
    if [ "$1" = jwt ]; then
        cat <<EOF
    http-request set-var(txn.tok) req.cook(portcullis_app)
    http-request return status 401 content-type application/json string '{"error":"no_session"}' unless { var(txn.tok) -m found }
    http-request set-var(txn.alg) var(txn.tok),jwt_header_query('\$.alg')
    http-request return status 401 content-type application/json string '{"error":"invalid_token"}' unless { var(txn.alg) -m str ES256 }
    http-request return status 401 content-type application/json string '{"error":"invalid_token"}' unless { var(txn.tok),jwt_verify(txn.alg,"$WORK/haproxy/pub.pem") -m int 1 }
    http-request set-var(txn.now) date
    http-request set-var(txn.exp) var(txn.tok),jwt_payload_query('\$.exp','int')
    http-request set-var(txn.iat) var(txn.tok),jwt_payload_query('\$.iat','int')
    http-request return status 401 content-type application/json string '{"error":"session_expired"}' if { var(txn.exp),sub(txn.now) -m int le 0 }
    http-request return status 401 content-type application/json string '{"error":"invalid_token"}' unless { var(txn.tok),jwt_payload_query('\$.aud') -m str bench }
    http-request set-var(txn.bnd) var(txn.tok),jwt_payload_query('\$.bnd')
    http-request return status 401 content-type application/json string '{"error":"binding_mismatch"}' unless { req.cook(portcullis_binding),digest(sha256),ub64enc,strcmp(txn.bnd) -m int 0 }
    http-request set-var(txn.sid) var(txn.tok),jwt_payload_query('\$.sid')
    http-request set-var(txn.sub) var(txn.tok),jwt_payload_query('\$.sub')
    http-request return status 401 content-type application/json string '{"error":"session_revoked"}' if { var(txn.sid),map_str_int($WORK/haproxy/sids.map,0),sub(txn.iat) -m int ge 0 }
    http-request return status 401 content-type application/json string '{"error":"session_revoked"}' if { var(txn.sub),map_str_int($WORK/haproxy/users.map,0),sub(txn.iat) -m int ge 0 }
    http-request set-header Portcullis-Jwt-Assertion %[var(txn.tok)]
EOF
    fi
    cat <<EOF
    default_backend be
backend be
    http-reuse always
    server origin 127.0.0.1:$ORIGIN_PORT
EOF
}
hap_config jwt "$FIRST_MODE" >"$WORK/haproxy/haproxy.cfg"
if ! haproxy -c -q -f "$WORK/haproxy/haproxy.cfg" >"$WORK/haproxy/check.out" 2>&1; then
    HAP_MODE=plain
    HAP_NOTE="haproxy $(haproxy -v | awk 'NR==1{print $3}') refused the jwt_verify config (needs 2.5+ with OpenSSL): plain proxy instead. $(head -3 "$WORK/haproxy/check.out" | tr '\n' ' ')"
    hap_config plain "$FIRST_MODE" >"$WORK/haproxy/haproxy.cfg"
    haproxy -c -q -f "$WORK/haproxy/haproxy.cfg" || die "haproxy config refused"
fi
start_haproxy() {
    log "starting haproxy ($HAP_MODE)"
    start_bg haproxy haproxy -db -f "$WORK/haproxy/haproxy.cfg"
    wait_port "$HAP_PORT" || { cat "$WORK/haproxy.out" >&2; die "haproxy did not start"; }
}
start_haproxy
if [ "$HAP_MODE" = jwt ]; then
    s=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $APP_HOST" -H "Cookie: $COOKIE" "http://127.0.0.1:$HAP_PORT/")
    [ "$s" = 200 ] || die "haproxy refused the Portcullis token ($s): $(cat "$WORK/haproxy.out")"
    s=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $APP_HOST" -H "Cookie: portcullis_app=$APP_TOKEN; portcullis_binding=wrong" "http://127.0.0.1:$HAP_PORT/")
    [ "$s" = 401 ] || die "haproxy accepted a wrong binding cookie ($s)"
fi

# ---------------------------------------------------------------- measuring
stat_ticks() { # fields pids...: the sum over the processes (threads included) of an awk
    # expression over /proc/<pid>/stat after the name ($12 utime, $13 stime), in ticks
    local fields="$1" t=0 p v; shift
    for p in "$@"; do
        v=$(awk '{sub(/.*\) /, ""); print '"$fields"'}' "/proc/$p/stat" 2>/dev/null || echo 0)
        t=$((t + v))
    done
    echo "$t"
}
cpu_ticks() { stat_ticks '$12 + $13' "$@"; } # utime+stime
sys_ticks() { stat_ticks '$13' "$@"; }       # stime: time in the kernel on their behalf
instance_pids() { # master pid: itself and its children (nginx workers)
    echo "$1 $(pgrep -P "$1" | tr '\n' ' ')"
}
HZ=$(getconf CLK_TCK)

children_ticks() { # CPU of this shell's waited-for children (cutime + cstime), in ticks
    awk '{sub(/.*\) /, ""); print $14 + $15}' "/proc/$$/stat"
}
cores_busy() { # "busy total" ticks of cpu0 + cpu1
    grep -E '^cpu[01] ' /proc/stat | awk '{ busy += $2 + $3 + $4 + $7 + $8 + $9; total += $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 } END { print busy, total }'
}
idle_pct() { # the smaller idle share of cpu0 and cpu1 over one second
    local a b
    a=$(grep -E '^cpu[01] ' /proc/stat)
    sleep 1
    b=$(grep -E '^cpu[01] ' /proc/stat)
    paste <(echo "$a") <(echo "$b") | awk '{
        n = (NF) / 2; t1 = 0; t2 = 0
        for (i = 2; i <= n; i++) t1 += $i
        for (i = n + 2; i <= NF; i++) t2 += $i
        idle = ($(n + 5) - $5) + ($(n + 6) - $6)
        p = (t2 > t1) ? 100 * idle / (t2 - t1) : 100
        if (min == "" || p < min) min = p
    } END { printf "%d\n", min }'
}
wait_idle() {
    local deadline=$(( $(date +%s) + IDLE_WAIT )) p
    while :; do
        p=$(idle_pct)
        if [ "$p" -ge "$IDLE_PCT" ] || [ "$(date +%s)" -ge "$deadline" ]; then
            echo "$p"; return
        fi
    done
}

to_us() { # wrk latency like 612.00us / 1.23ms / 1.00s -> microseconds
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.0f", v }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.0f", v * 1000 }
        else if (v ~ /m$/) { sub(/m$/, "", v); printf "%.0f", v * 60e6 }
        else { sub(/s$/, "", v); printf "%.0f", v * 1e6 }
    }'
}

other_load() { # cores_busy before, after, our ticks: CPU that processes outside this
    # benchmark used on cores 0-1 during a run, in % of both cores
    awk -v s0="$1" -v s1="$2" -v ours="$3" 'BEGIN {
        split(s0, a, " "); split(s1, b, " ")
        busy = b[1] - a[1]; total = b[2] - a[2]
        o = (total > 0) ? 100 * (busy - ours) / total : 0
        printf "%d", (o < 0) ? 0 : o }'
}

RESULTS="$WORK/results.txt"
: >"$RESULTS"
# run_case key label url proxy_pids... -- wrk header args...
run_case() {
    local key="$1" label="$2" url="$3"; shift 3
    local proxy_pids=()
    while [ "$1" != -- ]; do proxy_pids+=("$1"); shift; done
    shift
    local origin_pids; origin_pids=$(instance_pids "$PID_origin")
    log "$label: warm-up"
    taskset -c 1 wrk -t1 -c64 -d1s "$@" "$url" >/dev/null 2>&1 || true
    local r=1 tries=0
    while [ "$r" -le "$REPEAT" ]; do
        local idle; idle=$(wait_idle)
        local p0 o0 p1 o1 w0 w1 s0 s1 k0 k1 out
        p0=$(cpu_ticks "${proxy_pids[@]}"); o0=$(cpu_ticks $origin_pids); k0=$(sys_ticks "${proxy_pids[@]}")
        w0=$(children_ticks); s0=$(cores_busy)
        # In the background and waited for here, so wrk's CPU lands in this shell's cutime.
        taskset -c 1 wrk -t1 -c64 -d"${DURATION}s" --latency "$@" "$url" >"$WORK/wrk-$key-$r.txt" 2>&1 &
        wait $! || true
        s1=$(cores_busy); w1=$(children_ticks)
        p1=$(cpu_ticks "${proxy_pids[@]}"); o1=$(cpu_ticks $origin_pids); k1=$(sys_ticks "${proxy_pids[@]}")
        out=$(cat "$WORK/wrk-$key-$r.txt")
        local other
        other=$(other_load "$s0" "$s1" $(( (p1 - p0) + (o1 - o0) + (w1 - w0) )))
        local rps reqs p50 p99 non2xx errs
        rps=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
        reqs=$(echo "$out" | awk '/requests in/ {print $1}')
        p50=$(to_us "$(echo "$out" | awk '$1 ~ /^50(\.0+)?%$/ {print $2; exit}')")
        p99=$(to_us "$(echo "$out" | awk '$1 ~ /^99(\.0+)?%$/ {print $2; exit}')")
        non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}'); non2xx=${non2xx:-0}
        errs=$(echo "$out" | awk '/Socket errors/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}'); errs=${errs:-0}
        [ -n "$rps" ] && [ -n "$reqs" ] && [ "$reqs" -gt 0 ] || { echo "$out" >&2; die "$label: wrk failed"; }
        local pcpu ocpu kcpu
        if [ "$other" -gt "$MAX_OTHER" ] && [ "$tries" -lt "$RETRIES" ]; then
            tries=$((tries + 1))
            printf '    run %d disturbed (other load %s%% > %s%%, %.0f req/s): repeating it\n' "$r" "$other" "$MAX_OTHER" "$rps" >&2
            continue
        fi
        pcpu=$(awk -v a="$p0" -v b="$p1" -v n="$reqs" -v hz="$HZ" 'BEGIN { printf "%.1f", (b - a) * 1e6 / hz / n }')
        ocpu=$(awk -v a="$o0" -v b="$o1" -v n="$reqs" -v hz="$HZ" 'BEGIN { printf "%.1f", (b - a) * 1e6 / hz / n }')
        kcpu=$(awk -v a="$k0" -v b="$k1" -v n="$reqs" -v hz="$HZ" 'BEGIN { printf "%.1f", (b - a) * 1e6 / hz / n }')
        echo "$key|$label|$r|$rps|$p50|$p99|$pcpu|$ocpu|$non2xx|$errs|$idle|$other|$kcpu" >>"$RESULTS"
        case "$key" in
            pc_401*) ;;
            *) [ "$non2xx" = 0 ] || log "WARNING: $label: $non2xx responses were not 2xx/3xx" ;;
        esac
        printf '    run %d: %8.0f req/s  p50 %6s us  p99 %6s us  proxy %5s us/req (kernel %5s)  origin %5s us/req  non-2xx %s  idle before %s%%  other load %s%%\n' \
            "$r" "$rps" "$p50" "$p99" "$pcpu" "$kcpu" "$ocpu" "$non2xx" "$idle" "$other" >&2
        r=$((r + 1)); tries=0
    done
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "-"; exit } if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

table() { # keys in order; reference key
    local ref="$1"; shift
    local col
    # Median over the undisturbed runs of a scenario (other load <= MAX_OTHER), or over
    # all of them when every run was disturbed.
    m() {
        awk -F'|' -v k="$1" -v c="$2" -v max="$MAX_OTHER" '
            $1 == k { all[++n] = $c; if ($12 <= max) calm[++q] = $c }
            END { if (q > 0) for (i = 1; i <= q; i++) print calm[i]; else for (i = 1; i <= n; i++) print all[i] }
        ' "$RESULTS" | median
    }
    local ref_rps ref_p50 ref_p99 ref_cpu
    ref_rps=$(m "$ref" 4); ref_p50=$(m "$ref" 5); ref_p99=$(m "$ref" 6); ref_cpu=$(m "$ref" 7)
    printf '\n%-44s %9s %8s %8s %10s %10s %10s %7s %7s %7s %7s %8s\n' \
        "scenario (median, $REPEAT x ${DURATION}s)" "req/s" "p50 us" "p99 us" "proxy CPU" "of which" "origin CPU" \
        "x rps" "x p50" "x p99" "x CPU" "non-2xx"
    printf '%-44s %9s %8s %8s %10s %10s %10s %7s %7s %7s %7s %8s\n' \
        "" "" "" "" "us/req" "kernel" "us/req" "(vs b)" "(vs b)" "(vs b)" "(vs b)" "last run"
    local k
    for k in "$@"; do
        grep -q "^$k|" "$RESULTS" || continue
        local label rps p50 p99 cpu kcpu ocpu non
        label=$(awk -F'|' -v k="$k" '$1 == k {print $2; exit}' "$RESULTS")
        rps=$(m "$k" 4); p50=$(m "$k" 5); p99=$(m "$k" 6); cpu=$(m "$k" 7); ocpu=$(m "$k" 8)
        kcpu=$(m "$k" 13)
        non=$(awk -F'|' -v k="$k" '$1 == k {v = $9} END {print v}' "$RESULTS")
        if ! awk -F'|' -v k="$k" -v max="$MAX_OTHER" '$1 == k && $12 <= max {f = 1} END {exit !f}' "$RESULTS"; then
            label="$label (!)"
        fi
        ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
        local cpu_show="$cpu" kcpu_show="$kcpu" cr
        cr=$(ratio "$cpu" "$ref_cpu")
        case "$k" in origin*) cpu_show="-"; kcpu_show="-"; cr="-" ;; esac
        printf '%-44s %9.0f %8s %8s %10s %10s %10s %7s %7s %7s %7s %8s\n' "$label" "$rps" "$p50" "$p99" \
            "$cpu_show" "$kcpu_show" "$ocpu" "$(ratio "$rps" "$ref_rps")" "$(ratio "$p50" "$ref_p50")" \
            "$(ratio "$p99" "$ref_p99")" "$cr" "$non"
    done
}

H_APP=(-H "Host: $APP_HOST")
H_BROWSER=(-H "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8" -H "Accept-Language: en-GB,en;q=0.9")

cpu_note="CPU = utime+stime from /proc/<pid>/stat (resolution 1/$HZ s) over the run / requests; 'of which kernel' = stime alone"
log "Portcullis: $workers; $REVOKED revocation entries; haproxy mode: $HAP_MODE"

# Keys carry the log mode: nginx@off, pc_auth_tls@on...; the direct origin (never logged)
# is measured once, in the first pass, and shown in both tables.
scenarios_plain() { # off|on
    local m="$1" l=" [log $1]"
    [ "$m" = "$FIRST_MODE" ] && run_case origin "a) nginx origin direct" "http://127.0.0.1:$ORIGIN_PORT/" -- "${H_APP[@]}" "${H_BROWSER[@]}"
    run_case "nginx@$m" "b) nginx proxy_pass (keepalive)$l" "http://127.0.0.1:$NGINX_PORT/" $(instance_pids "$PID_nginx") -- "${H_APP[@]}" "${H_BROWSER[@]}"
    run_case "haproxy@$m" "c) haproxy $HAP_MODE (ES256 jwt_verify + maps)$l" "http://127.0.0.1:$HAP_PORT/" "$PID_haproxy" -- "${H_APP[@]}" "${H_BROWSER[@]}" -H "Cookie: $COOKIE"
    run_case "pc_auth@$m" "d) Portcullis, logged in (binding cookie)$l" "http://127.0.0.1:$PC_HTTP/" "$PID_portcullis" -- "${H_APP[@]}" "${H_BROWSER[@]}" -H "Cookie: $COOKIE"
    run_case "pc_401@$m" "e) Portcullis, unauthenticated (401 JSON)$l" "http://127.0.0.1:$PC_HTTP/" "$PID_portcullis" -- "${H_APP[@]}" -H "Accept: application/json"
}

scenarios_tls() { # off|on
    local m="$1" l=" [log $1]" s
    # wrk sends the URL's host as SNI; Portcullis refuses an SNI that differs from Host,
    # so the TLS URLs name the app host and wrk reaches it through a resolver-free path:
    # the certificate covers app.localhost and the Host header carries it.
    s=$(curl -sk -o /dev/null -w '%{http_code}' -H "Host: $APP_HOST" -H "Cookie: $COOKIE" "https://127.0.0.1:$PC_TLS/")
    if [ "$s" != 200 ]; then
        log "TLS: Portcullis answers $s to a TLS request to 127.0.0.1 with Host $APP_HOST (SNI is the IP); TLS mode skipped"
        TLS=skipped
        return
    fi
    [ "$m" = "$FIRST_MODE" ] && run_case origin_tls "a) nginx origin direct, TLS" "https://127.0.0.1:$ORIGIN_TLS/" -- "${H_APP[@]}" "${H_BROWSER[@]}"
    run_case "nginx_tls@$m" "b) nginx proxy_pass, TLS$l" "https://127.0.0.1:$NGINX_TLS/" $(instance_pids "$PID_nginx") -- "${H_APP[@]}" "${H_BROWSER[@]}"
    run_case "haproxy_tls@$m" "c) haproxy $HAP_MODE, TLS$l" "https://127.0.0.1:$HAP_TLS/" "$PID_haproxy" -- "${H_APP[@]}" "${H_BROWSER[@]}" -H "Cookie: $COOKIE"
    run_case "pc_auth_tls@$m" "d) Portcullis, logged in, TLS$l" "https://127.0.0.1:$PC_TLS/" "$PID_portcullis" -- "${H_APP[@]}" "${H_BROWSER[@]}" -H "Cookie: $COOKIE"
    run_case "pc_401_tls@$m" "e) Portcullis, unauthenticated, TLS$l" "https://127.0.0.1:$PC_TLS/" "$PID_portcullis" -- "${H_APP[@]}" -H "Accept: application/json"
}

stop_pid() { # pid: TERM, then wait for it (at most 10 s), then KILL
    local i
    kill "$1" 2>/dev/null || return 0
    for i in $(seq 1 100); do
        kill -0 "$1" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$1" 2>/dev/null || true
}

restart_proxies() { # off|on: the three proxies with their access logs in that mode
    local m="$1"
    log "restarting the proxies with access logs $m"
    stop_pid "$PID_portcullis"; stop_pid "$PID_nginx"; stop_pid "$PID_haproxy"
    pc_config "$m"
    nginx_proxy_config "$m" >"$WORK/nginx/nginx.conf"
    nginx -t -q -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -e "$WORK/nginx/error.log" || die "nginx config ($m) refused"
    hap_config "$HAP_MODE" "$m" >"$WORK/haproxy/haproxy.cfg"
    haproxy -c -q -f "$WORK/haproxy/haproxy.cfg" || die "haproxy config ($m) refused"
    start_portcullis
    start_bg nginx nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -e "$WORK/nginx/error.log"
    wait_port "$NGINX_PORT" || die "nginx proxy did not start"
    start_haproxy
    [ "$(pc_status -H "Cookie: $COOKIE")" = 200 ] || die "the session is not accepted after the restart"
}

# Lines each proxy wrote in a pass, and what Portcullis dropped: the logs were really on.
LOG_NOTES=()
log_counts() { # off|on
    [ "$1" = on ] || return 0
    sleep 1.5 # nginx flushes its buffer within a second
    local n h p d
    n=$(wc -l <"$WORK/nginx/access.log" 2>/dev/null || echo 0)
    h=$(grep -c ' HTTP/1.1"' "$WORK/haproxy.out" 2>/dev/null || true)
    p=$(grep -c 'portcullis::access' "$WORK/portcullis.out" 2>/dev/null || true)
    d=$(curl -s "http://127.0.0.1:$PC_CTRL/metrics" | awk '$1 == "portcullis_access_log_dropped_total" {print $2}')
    LOG_NOTES+=("access log lines written with logs on: nginx $n, haproxy ${h:-0}, Portcullis ${p:-0} (Portcullis dropped ${d:-?})")
}

for mode in $LOG_MODES; do
    [ "$mode" = "$FIRST_MODE" ] || restart_proxies "$mode"
    scenarios_plain "$mode"
    [ "$TLS" = 1 ] && scenarios_tls "$mode"
    log_counts "$mode"
done
LAST_MODE=${LOG_MODES##* }

# ---------------------------------------------------------------- fixed rate
# An open-model load: oha offers RATE requests/s in total (-q counts all connections
# together) whatever the server's answer time, and with --latency-correction times each
# request from when it was due rather than from when a connection was free to send it, so
# waiting behind a slow answer is counted (coordinated omission). At a rate every server
# sustains, the latency is near each one's unloaded latency, and the difference to the
# direct origin over the same transport is what the proxy adds.
RATE_RESULTS="$WORK/rate.txt"
: >"$RATE_RESULTS"
# oha opens its 64 connections with its first 64 requests: over TLS those handshakes queue
# on the server's one core and the requests due meanwhile wait tens of ms, which alone
# would be the p99 of a 3 s run. So each run lasts RATE_WARMUP s longer and only requests
# due after it are counted, from oha's per-request records (--db-url, SQLite).
RATE_WARMUP=1
OHA_DEADLINE="aborted due to deadline" # oha's error for the requests still open when -z ends
# rate_case key label url proxy_pids... -- oha header args...
rate_case() {
    local key="$1" label="$2" url="$3"; shift 3
    local proxy_pids=()
    while [ "$1" != -- ]; do proxy_pids+=("$1"); shift; done
    shift
    local origin_pids; read -ra origin_pids <<<"$(instance_pids "$PID_origin")"
    # Self-signed certificate; like wrk, oha sends no SNI to an IP address.
    local tls=()
    case "$url" in https:*) tls=(--insecure) ;; esac
    local r=1 tries=0
    while [ "$r" -le "$REPEAT" ]; do
        local idle; idle=$(wait_idle)
        local p0 o0 p1 o1 w0 w1 s0 s1 run="$WORK/oha-$key-$r-$tries"
        p0=$(cpu_ticks "${proxy_pids[@]}"); o0=$(cpu_ticks "${origin_pids[@]}")
        w0=$(children_ticks); s0=$(cores_busy)
        # In the background and waited for, as wrk in run_case, so oha's CPU counts as ours.
        taskset -c 1 oha --no-tui --output-format json -z "$((DURATION + RATE_WARMUP))s" -c 64 -q "$RATE" \
            --latency-correction "${tls[@]}" --db-url "$run.db" "$@" "$url" >"$run.json" 2>"$run.err" &
        wait $! || true
        s1=$(cores_busy); w1=$(children_ticks)
        p1=$(cpu_ticks "${proxy_pids[@]}"); o1=$(cpu_ticks "${origin_pids[@]}")
        local other; other=$(other_load "$s0" "$s1" $(( (p1 - p0) + (o1 - o0) + (w1 - w0) )))
        # Latency and achieved rate over the measured window, from the table oha 1.16 writes:
        # oha(start_latency_correction = when the request was due, duration = end minus
        # that, both in seconds since the run's start; one row per response). Percentiles
        # taken as oha does: the value at index floor(p/100 * n) of the sorted durations.
        local lat
        lat=$(sqlite3 "$run.db" "SELECT duration FROM oha WHERE start_latency_correction >= $RATE_WARMUP
                AND start_latency_correction < $((RATE_WARMUP + DURATION)) ORDER BY duration" 2>/dev/null \
            | awk -v d="$DURATION" '
                { v[NR] = $1 }
                function p(q) { return v[int(q / 100 * NR) + 1] * 1e6 }
                END { if (NR == 0) exit; printf "%.0f|%.0f|%.0f|%.0f|%d", NR / d, p(50), p(99), p(99.9), NR }') || lat=""
        # Status codes and failures over the whole run, warm-up included, from oha's JSON
        # report: statusCodeDistribution {"200": n}, errorDistribution {"message": n}.
        local st
        st=$(jq -r --arg dl "$OHA_DEADLINE" '
            (.statusCodeDistribution | to_entries) as $st
            | ($st | map(.value) | add // 0) as $n
            | ($st | map(select(.key | startswith("2") | not) | .value) | add // 0) as $bad
            | [ (if $n > 0 then 100 * $bad / $n else 0 end),
                (.errorDistribution | to_entries | map(select(.key != $dl) | .value) | add // 0),
                ($st | map("\(.key):\(.value)") | join(" "))
              ] | map(tostring) | join("|")' "$run.json" 2>/dev/null) || st=""
        if [ -z "$lat" ] || [ -z "$st" ]; then
            die "$label: oha gave no responses: $(head -c 600 "$run.err" "$run.json")"
        fi
        local rps p50 p99 p999 n bad errs codes
        IFS='|' read -r rps p50 p99 p999 n <<<"$lat"
        IFS='|' read -r bad errs codes <<<"$st"
        bad=$(awk -v b="$bad" 'BEGIN { printf "%.2f", b }')
        if [ "$other" -gt "$MAX_OTHER" ] && [ "$tries" -lt "$RETRIES" ]; then
            tries=$((tries + 1))
            printf '    run %d disturbed (other load %s%% > %s%%, p99 %s us): repeating it\n' "$r" "$other" "$MAX_OTHER" "$p99" >&2
            continue
        fi
        echo "$key|$label|$r|$rps|$p50|$p99|$p999|$bad|$errs|$n|$codes|$idle|$other" >>"$RATE_RESULTS"
        [ "$bad" = 0.00 ] || log "WARNING: $label: $bad% of the responses were not 2xx ($codes)"
        [ "$errs" = 0 ] || log "WARNING: $label: $errs requests failed: $(jq -c .errorDistribution "$run.json")"
        printf '    run %d: %6s req/s  p50 %6s us  p99 %6s us  p99.9 %6s us  status %s  errors %s  idle before %s%%  other load %s%%\n' \
            "$r" "$rps" "$p50" "$p99" "$p999" "$codes" "$errs" "$idle" "$other" >&2
        r=$((r + 1)); tries=0
    done
}

rate_table() { # reference key (the direct origin); keys in order
    local ref="$1"; shift
    # Median over the undisturbed runs, as in table().
    rate_med() {
        awk -F'|' -v k="$1" -v c="$2" -v max="$MAX_OTHER" '
            $1 == k && $c != "-" { all[++n] = $c; if ($13 <= max) calm[++q] = $c }
            END { if (q > 0) for (i = 1; i <= q; i++) print calm[i]; else for (i = 1; i <= n; i++) print all[i] }
        ' "$RATE_RESULTS" | median
    }
    local ref_p50 ref_p99
    ref_p50=$(rate_med "$ref" 5); ref_p99=$(rate_med "$ref" 6)
    printf '\n%-44s %8s %6s %7s %7s %8s %7s %7s %7s %6s  %s\n' \
        "scenario (median, $REPEAT x ${DURATION}s)" "req/s" "load" "p50 us" "p99 us" "p99.9 us" \
        "+p50 us" "+p99 us" "non-2xx" "errors" "notes"
    printf '%-44s %8s %6s %7s %7s %8s %7s %7s %7s %6s\n' \
        "" "achieved" "of max" "" "" "" "(vs a)" "(vs a)" "worst" "total"
    local k
    for k in "$@"; do
        grep -q "^$k|" "$RATE_RESULTS" || continue
        local label rps p50 p99 p999 bad errs codes sat load notes=() d50="-" d99="-"
        label=$(awk -F'|' -v k="$k" '$1 == k {print $2; exit}' "$RATE_RESULTS")
        rps=$(rate_med "$k" 4); p50=$(rate_med "$k" 5); p99=$(rate_med "$k" 6); p999=$(rate_med "$k" 7)
        bad=$(awk -F'|' -v k="$k" '$1 == k && $8 > m {m = $8} END {printf "%.2f", m}' "$RATE_RESULTS")
        errs=$(awk -F'|' -v k="$k" '$1 == k {e += $9} END {print e + 0}' "$RATE_RESULTS")
        codes=$(awk -F'|' -v k="$k" '$1 == k {v = $11} END {print v}' "$RATE_RESULTS")
        if ! awk -F'|' -v k="$k" -v max="$MAX_OTHER" '$1 == k && $13 <= max {f = 1} END {exit !f}' "$RATE_RESULTS"; then
            label="$label (!)"
        fi
        if [ "$k" != "$ref" ]; then
            d50=$(awk -v a="$p50" -v b="$ref_p50" 'BEGIN { printf "%+d", a - b }')
            d99=$(awk -v a="$p99" -v b="$ref_p99" 'BEGIN { printf "%+d", a - b }')
        fi
        # Below 95% of the target, the server (or oha) fell behind: the latency is queueing.
        if awk -v a="$rps" -v t="$RATE" 'BEGIN { exit !(a < 0.95 * t) }'; then
            notes+=("target not sustained")
        fi
        # The target as a share of the scenario's saturation rate in the table above: queueing,
        # and so the tail, grows steeply as it nears 100%.
        sat=$(awk -F'|' -v k="$k" '$1 == k {print $4}' "$RESULTS" | median)
        load=$(awk -v s="$sat" -v t="$RATE" 'BEGIN { if (s != "-" && s > 0) printf "%.0f%%", 100 * t / s; else print "-" }')
        if awk -v s="$sat" -v t="$RATE" 'BEGIN { exit !(s != "-" && s < t) }'; then
            notes+=("above its saturation rate ($(printf '%.0f' "$sat") req/s)")
        fi
        [ "$bad" = 0.00 ] || notes+=("NOT 2xx: status $codes (last run)")
        printf '%-44s %8s %6s %7s %7s %8s %7s %7s %6s%% %6s' "$label" "$rps" "$load" "$p50" "$p99" "$p999" \
            "$d50" "$d99" "$bad" "$errs"
        local note sep="  "
        for note in "${notes[@]}"; do printf '%s%s' "$sep" "$note"; sep="; "; done
        echo
    done
}

scenarios_rate() { # the proxies as the last pass left them (access logs $LAST_MODE)
    local nginx_pids m="@$LAST_MODE"; read -ra nginx_pids <<<"$(instance_pids "$PID_nginx")"
    rate_case origin "a) nginx origin direct" "http://127.0.0.1:$ORIGIN_PORT/" -- "${H_APP[@]}" "${H_BROWSER[@]}"
    rate_case "nginx$m" "b) nginx proxy_pass (keepalive)" "http://127.0.0.1:$NGINX_PORT/" "${nginx_pids[@]}" -- "${H_APP[@]}" "${H_BROWSER[@]}"
    rate_case "haproxy$m" "c) haproxy $HAP_MODE (ES256 jwt_verify + maps)" "http://127.0.0.1:$HAP_PORT/" "$PID_haproxy" -- "${H_APP[@]}" "${H_BROWSER[@]}" -H "Cookie: $COOKIE"
    rate_case "pc_auth$m" "d) Portcullis, logged in (binding cookie)" "http://127.0.0.1:$PC_HTTP/" "$PID_portcullis" -- "${H_APP[@]}" "${H_BROWSER[@]}" -H "Cookie: $COOKIE"
    if [ "$TLS" = 1 ]; then
        rate_case origin_tls "a) nginx origin direct, TLS" "https://127.0.0.1:$ORIGIN_TLS/" -- "${H_APP[@]}" "${H_BROWSER[@]}"
        rate_case "nginx_tls$m" "b) nginx proxy_pass, TLS" "https://127.0.0.1:$NGINX_TLS/" "${nginx_pids[@]}" -- "${H_APP[@]}" "${H_BROWSER[@]}"
        rate_case "haproxy_tls$m" "c) haproxy $HAP_MODE, TLS" "https://127.0.0.1:$HAP_TLS/" "$PID_haproxy" -- "${H_APP[@]}" "${H_BROWSER[@]}" -H "Cookie: $COOKIE"
        rate_case "pc_auth_tls$m" "d) Portcullis, logged in, TLS" "https://127.0.0.1:$PC_TLS/" "$PID_portcullis" -- "${H_APP[@]}" "${H_BROWSER[@]}" -H "Cookie: $COOKIE"
    fi
}

fixed_rate() {
    local ver; ver=$(oha --version | awk '{print $NF}')
    log "fixed rate: $RATE req/s with oha $ver"
    scenarios_rate
    echo
    echo "Fixed rate: $RATE req/s offered in total (oha $ver -q $RATE -c64 --latency-correction --no-tui on"
    echo "core 1, keep-alive; same servers, URLs and headers as above, access logs $LAST_MODE). Latency runs from each request's"
    echo "scheduled start, over the ${DURATION}s after a ${RATE_WARMUP}s warm-up (connection set-up) in the same run;"
    echo "+p50/+p99 = what the proxy adds over a) on the same transport; req/s = answered requests due per"
    echo "second of the window (below 95% of the target: not sustained); non-2xx = worst share in a run (must be 0)."
    local m="@$LAST_MODE"
    rate_table origin origin "nginx$m" "haproxy$m" "pc_auth$m"
    if [ "$TLS" = 1 ]; then
        echo
        echo "TLS (origin hop plaintext; +p50/+p99 against a) over TLS):"
        rate_table origin_tls origin_tls "nginx_tls$m" "haproxy_tls$m" "pc_auth_tls$m"
    fi
    echo "Per run: idle share before, other load during (as above; disturbed runs above $MAX_OTHER% are repeated)."
    awk -F'|' '{ printf "  %-44s run %s: %6s req/s, p99 %6s us, idle before %3s%%, other load %3s%%\n", $2, $3, $4, $6, $12, $13 }' "$RATE_RESULTS"
}

# ---------------------------------------------------------------- report
echo
echo "Portcullis load comparison  $(date -u +%Y-%m-%dT%H:%MZ)  $(uname -r)  $(nproc) cores"
echo "servers pinned to core 0 (one worker each: nginx worker_processes 1, haproxy nbthread 1,"
echo "Portcullis TOKIO_WORKER_THREADS=1), wrk -t1 -c64 on core 1, keep-alive."
echo "Portcullis runs $workers."
echo "origin: nginx, 1 KiB file, access_log off.  $cpu_note."
echo "Portcullis: $REVOKED revocation entries (sessions and users); haproxy maps hold the same keys."
echo "Access logs on: nginx 'access_log ... combined buffer=64k flush=1s'; haproxy 'option httplog' to stdout;"
echo "Portcullis' default access log (text, stderr); each into a file. Off: none of them log requests."
[ -n "${HAP_NOTE:-}" ] && echo "NOTE: $HAP_NOTE"
for mode in $LOG_MODES; do
    echo
    echo "== access logs $mode (ratios to nginx proxy_pass with access log $mode, same run)"
    table "nginx@$mode" origin "nginx@$mode" "haproxy@$mode" "pc_auth@$mode" "pc_401@$mode"
    if [ "$TLS" = 1 ]; then
        echo
        echo "TLS, access logs $mode (one self-signed certificate for all; origin hop stays plaintext):"
        table "nginx_tls@$mode" origin_tls "nginx_tls@$mode" "haproxy_tls@$mode" "pc_auth_tls@$mode" "pc_401_tls@$mode"
    elif [ "$TLS" = skipped ]; then
        echo "TLS mode skipped (see above)."
    fi
done
for note in "${LOG_NOTES[@]}"; do echo "$note"; done
echo "(ratios: each figure divided by nginx proxy_pass. Medians leave out runs disturbed by other load"
echo " above $MAX_OTHER% when the scenario has undisturbed runs; (!) marks a scenario whose runs were all disturbed.)"
echo "Per run: idle share of the busier core before the run; 'other load' = CPU that processes outside"
echo "this benchmark used on cores 0-1 during the run (% of both cores); above $MAX_OTHER% a run counts as disturbed."
awk -F'|' '{ printf "  %-44s run %s: %8.0f req/s, idle before %3s%%, other load %3s%%, socket errors %s\n", $2, $3, $4, $11, $12, $10 }' "$RESULTS"

# After the saturation table, so that table is out even if this pass fails.
if [ "$RATE_RUN" = 1 ]; then
    fixed_rate
fi
exit 0
}
