#!/usr/bin/env bash
# Brings compose.yaml up for real on this machine, checks every service, runs one
# export through a worker, restarts Redis, and tears everything down again.
#
#   deploy/check.sh [--no-pytest-celery] [--keep-temp]
#
# Engine: `docker compose` when a Docker engine answers, otherwise podman with
# podman-compose (installed when missing: Debian's podman, runc, debootstrap and
# the CNI dnsname plugin through apt-get as root; podman-compose from PyPI into a
# virtualenv in the cache directory). When no registry answers, the base images
# are stand-ins built from Debian's packages (debootstrap) and passed to compose
# as PYTHON_IMAGE and REDIS_IMAGE. Then, unless --no-pytest-celery, the suite in
# deploy/pytest-celery runs against the worker image compose built.
#
# Exit status: 0 everything came up and passed, 1 a check failed,
# 2 bad usage, 3 no container engine could be had.
#
# Environment:
#   NX_DEPLOY_ENGINE     docker or podman (default: the first that works)
#   NX_DEPLOY_STANDINS   auto (default: only when the images cannot be pulled),
#                        always, or never
#   NX_DEPLOY_CACHE      where the virtualenvs of podman-compose and pytest-celery are kept
#                        (default: ${XDG_CACHE_HOME:-~/.cache}/nexuslims-export-deploy)
#   PYTHON_IMAGE, REDIS_IMAGE  the base images (defaults as in compose.yaml)
#
# Secrets (Redis password, Flower and dashboard auth) are generated for each run
# into a .env in a temporary copy of the project; they are never printed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROJECT=nexuslims-export-check
WORKERS=2
PODMAN_COMPOSE_VERSION=1.6.0
PYTEST_CELERY_VERSION=1.3.0
STANDIN_DEBIAN=localhost/nexuslims-standin/debian:bookworm
STANDIN_PYTHON=localhost/nexuslims-standin/python:bookworm
STANDIN_REDIS=localhost/nexuslims-standin/redis:bookworm
SAMPLE=minimal-session.xml
SAMPLE_INSTRUMENT=JEOL-JEM3010-TEM-565989
sample_record() {  # the smallest record the worker accepts
  cat <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<nx:Experiment xmlns:nx="https://data.nist.gov/od/dm/nexus/experiment/v1.0">
  <nx:summary>
    <nx:instrument pid="$SAMPLE_INSTRUMENT">JEOL JEM-3010</nx:instrument>
  </nx:summary>
</nx:Experiment>
EOF
}
PYTHON_IMAGE="${PYTHON_IMAGE:-python:3.12-slim}"
REDIS_IMAGE="${REDIS_IMAGE:-redis:7.4-alpine}"
CACHE="${NX_DEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nexuslims-export-deploy}"

RUN_PYTEST_CELERY=1
KEEP_TEMP=0
for argument in "$@"; do
  case "$argument" in
    --no-pytest-celery) RUN_PYTEST_CELERY=0 ;;
    --keep-temp) KEEP_TEMP=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "unknown argument: $argument (see --help)" >&2; exit 2 ;;
  esac
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/nexuslims-deploy-check.XXXXXX")"
chmod 755 "$WORK"
PROJECT_DIR="$WORK/project"
ENGINE=""
COMPOSE=()
BROUGHT_UP=0
SERVICE_PID=""
SECRETS=()

# ---------------------------------------------------------------- reporting
START_ALL=$(date +%s.%N)
PHASES=()
PHASE_NAME=""
PHASE_START=""
CAME_UP=()
PASSED=0

say() { printf '[deploy-check] %s\n' "$*"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
phase() {
  end_phase
  PHASE_NAME="$1"
  PHASE_START=$(date +%s.%N)
  say "== $1"
}
end_phase() {
  if [ -n "$PHASE_NAME" ]; then
    PHASES+=("$(printf '%-28s %6ss' "$PHASE_NAME" "$(elapsed "$PHASE_START")")")
    PHASE_NAME=""
  fi
}
ok() { PASSED=$((PASSED + 1)); say "ok: $*"; }
# Hides the generated secrets in whatever is shown (logs of a failed service).
mask() {
  local line secret
  while IFS= read -r line; do
    for secret in "${SECRETS[@]}"; do line="${line//"$secret"/***}"; done
    printf '%s\n' "$line"
  done
}
fail() {
  say "FAILED: $*"
  if [ "$BROUGHT_UP" = 1 ]; then
    say "last log lines of each service:"
    compose logs --tail 25 2>&1 | mask | sed 's/^/    /' || true
  fi
  end_phase
  summary "FAILED"
  exit 1
}
summary() {
  echo
  say "---------------------------------------------------------------- summary"
  say "result: $1 ($PASSED checks passed)"
  [ -n "$ENGINE" ] && say "engine: $ENGINE_DESCRIPTION"
  say "images: python base $PYTHON_IMAGE, redis $REDIS_IMAGE"
  local item
  for item in "${CAME_UP[@]}"; do say "came up: $item"; done
  for item in "${PHASES[@]}"; do say "phase: $item"; done
  say "total: $(elapsed "$START_ALL")s"
}

# ---------------------------------------------------------------- cleanup
cleanup() {
  local status=$?
  set +e
  if [ -n "$SERVICE_PID" ]; then
    kill "$SERVICE_PID" 2>/dev/null
    wait "$SERVICE_PID" 2>/dev/null
  fi
  if [ "$BROUGHT_UP" = 1 ]; then teardown >/dev/null 2>&1; fi
  if [ "$KEEP_TEMP" = 1 ]; then say "kept $WORK (its project/.env holds this run's secrets)"; else rm -rf "$WORK"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- engine
no_engine() {
  say "NO ENGINE: $*"
  say "no container engine could be had: neither docker compose with a running"
  say "Docker engine nor podman with podman-compose; nothing was checked."
  exit 3
}

docker_works() {
  command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1 \
    && docker info >/dev/null 2>&1
}

install_podman() {
  local packages=(podman runc debootstrap golang-github-containernetworking-plugin-dnsname curl)
  local missing=() package
  for package in "${packages[@]}"; do
    dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$package")
  done
  [ "${#missing[@]}" = 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || no_engine "podman is missing and there is no apt-get"
  [ "$(id -u)" = 0 ] || no_engine "podman is missing and installing it needs root"
  say "installing ${missing[*]} (apt-get)"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >"$WORK/apt.log" 2>&1
  then
    apt-get update -q >>"$WORK/apt.log" 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>"$WORK/apt.log" 2>&1 \
      || { tail -5 "$WORK/apt.log" >&2; no_engine "apt-get could not install ${missing[*]}"; }
  fi
}

install_podman_compose() {
  local venv="$CACHE/podman-compose-$PODMAN_COMPOSE_VERSION"
  if [ ! -x "$venv/bin/podman-compose" ]; then
    say "installing podman-compose==$PODMAN_COMPOSE_VERSION into $venv"
    mkdir -p "$CACHE"
    { python3 -m venv "$venv" \
        && "$venv/bin/python" -m pip install -q "podman-compose==$PODMAN_COMPOSE_VERSION"; } \
      >"$WORK/pip.log" 2>&1 \
      || { tail -5 "$WORK/pip.log" >&2; rm -rf "$venv"; no_engine "podman-compose could not be installed"; }
  fi
  PODMAN_COMPOSE="$venv/bin/podman-compose"
}

# podman 4.3 as root without systemd: crun cannot raise RLIMIT_NOFILE and cgroups are
# hybrid, so runc with limits inside the hard limit; CNI with dnsname resolves service
# names reliably (netavark + aardvark-dns failed now and then). Kept out of the repo.
write_containers_conf() {
  local nofile
  nofile=$(ulimit -Hn)
  [ "$nofile" = unlimited ] && nofile=1048576
  cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]
[engine]
runtime = "runc"
# An exec through the Docker API (pytest-docker-tools polls ports that way) keeps its
# conmon 300 s by default, after the container is gone.
exit_command_delay = 5
[network]
network_backend = "cni"
EOF
  export CONTAINERS_CONF="$WORK/containers.conf"
}

find_engine() {
  local wanted="${NX_DEPLOY_ENGINE:-}"
  case "$wanted" in ""|docker|podman) ;; *) echo "NX_DEPLOY_ENGINE: docker or podman" >&2; exit 2 ;; esac
  if [ "$wanted" != podman ] && docker_works; then
    ENGINE=docker
    COMPOSE=(docker compose)
    ENGINE_DESCRIPTION="docker $(docker version -f '{{.Server.Version}}' 2>/dev/null), $(docker compose version --short 2>/dev/null | sed 's/^/compose /')"
    return
  fi
  [ "$wanted" = docker ] && no_engine "NX_DEPLOY_ENGINE=docker but no Docker engine answers"
  install_podman
  command -v podman >/dev/null 2>&1 || no_engine "podman is not installed"
  install_podman_compose
  write_containers_conf
  podman info >/dev/null 2>"$WORK/podman-info.log" \
    || { tail -5 "$WORK/podman-info.log" >&2; no_engine "podman does not run here"; }
  ENGINE=podman
  COMPOSE=("$PODMAN_COMPOSE")
  ENGINE_DESCRIPTION="podman $(podman version -f '{{.Client.Version}}'), podman-compose $PODMAN_COMPOSE_VERSION, runc, CNI"
}

compose() {
  (cd "$PROJECT_DIR" && "${COMPOSE[@]}" -p "$PROJECT" -f compose.yaml --profile dashboard "$@")
}

# ---------------------------------------------------------------- base images
image_exists() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

apt_mirror() {
  local uri
  uri=$(grep -h -E '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | awk '{ print $2 }' | grep -v -- '-security' | head -1 || true)
  [ -n "$uri" ] || uri=$(grep -h -E '^deb ' /etc/apt/sources.list 2>/dev/null \
    | awk '{ print $2 }' | grep -v -- '-security' | head -1 || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

build_standins() {
  local context="$WORK/standins"
  mkdir -p "$context/ca"
  if ! image_exists "$STANDIN_DEBIAN"; then
    say "debootstrap bookworm from $(apt_mirror)"
    debootstrap --variant=minbase bookworm "$WORK/rootfs" "$(apt_mirror)" >"$WORK/debootstrap.log" 2>&1 \
      || { tail -5 "$WORK/debootstrap.log"; fail "debootstrap failed"; }
    tar -C "$WORK/rootfs" -c . | "$ENGINE" import - "$STANDIN_DEBIAN" >/dev/null 2>&1 \
      || fail "could not import the Debian root file system"
    rm -rf "$WORK/rootfs"
  fi
  # CAs this machine trusts beyond Debian's (e.g. a proxy's), so pip can verify TLS
  # inside the build; they go into the stand-in image only.
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$context/ca/"
  fi
  if ! image_exists "$STANDIN_PYTHON"; then
    cat >"$context/Containerfile.python" <<EOF
FROM $STANDIN_DEBIAN
COPY ca/ /usr/local/share/ca-certificates/
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \\
      python3 python3-venv ca-certificates \\
    && update-ca-certificates && rm -rf /var/lib/apt/lists/* \\
    && python3 -m venv /usr/local/python
ENV PATH=/usr/local/python/bin:\$PATH PIP_CERT=/etc/ssl/certs/ca-certificates.crt
EOF
    "$ENGINE" build --pull=never -q -t "$STANDIN_PYTHON" -f "$context/Containerfile.python" \
      "$context" >"$WORK/standin-python.log" 2>&1 \
      || { tail -20 "$WORK/standin-python.log"; fail "could not build the Python stand-in"; }
  fi
  if ! image_exists "$STANDIN_REDIS"; then
    cat >"$context/Containerfile.redis" <<EOF
FROM $STANDIN_DEBIAN
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \\
      redis-server redis-tools && rm -rf /var/lib/apt/lists/*
WORKDIR /data
EOF
    "$ENGINE" build --pull=never -q -t "$STANDIN_REDIS" -f "$context/Containerfile.redis" \
      "$context" >"$WORK/standin-redis.log" 2>&1 \
      || { tail -20 "$WORK/standin-redis.log"; fail "could not build the Redis stand-in"; }
  fi
}

choose_images() {
  local mode="${NX_DEPLOY_STANDINS:-auto}" need=0
  case "$mode" in auto|always|never) ;; *) echo "NX_DEPLOY_STANDINS: auto, always or never" >&2; exit 2 ;; esac
  if [ "$mode" = always ]; then
    need=1
  else
    local image
    for image in "$PYTHON_IMAGE" "$REDIS_IMAGE"; do
      if ! image_exists "$image" && ! timeout 120 "$ENGINE" pull -q "$image" >/dev/null 2>&1; then
        say "cannot pull $image"
        need=1
      fi
    done
  fi
  if [ "$need" = 1 ]; then
    [ "$mode" = never ] && fail "the base images cannot be had and NX_DEPLOY_STANDINS=never"
    say "building stand-ins for the base images from Debian's packages"
    build_standins
    PYTHON_IMAGE="$STANDIN_PYTHON (stand-in: Debian bookworm, Python 3.11)"
    REDIS_IMAGE="$STANDIN_REDIS (stand-in: Debian bookworm, Redis 7.0)"
    ENV_PYTHON_IMAGE=$STANDIN_PYTHON
    ENV_REDIS_IMAGE=$STANDIN_REDIS
  else
    ENV_PYTHON_IMAGE=$PYTHON_IMAGE
    ENV_REDIS_IMAGE=$REDIS_IMAGE
  fi
}

# ---------------------------------------------------------------- project copy and .env
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
token() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }

prepare_project() {
  mkdir -p "$PROJECT_DIR"
  # The files git knows of (tracked or not ignored): the build context without .venv or .env.
  if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
      | while IFS= read -r -d '' file; do [ -e "$file" ] && printf '%s\0' "$file"; done \
      | tar --null -T - -cf -) | tar -C "$PROJECT_DIR" -xf -
  else
    tar -C "$ROOT" --exclude=.venv --exclude=.env --exclude=__pycache__ -cf - . \
      | tar -C "$PROJECT_DIR" -xf -
  fi
  mkdir -p "$PROJECT_DIR/records" "$PROJECT_DIR/data"
  sample_record >"$PROJECT_DIR/records/$SAMPLE"
  chmod 755 "$PROJECT_DIR" "$PROJECT_DIR/records" "$PROJECT_DIR/data"
  chmod 644 "$PROJECT_DIR/records/$SAMPLE"

  REDIS_PASSWORD=$(token)
  FLOWER_AUTH="operator:$(token)"
  DASHBOARD_AUTH="operator:$(token)"
  SECRETS=("$REDIS_PASSWORD" "${FLOWER_AUTH#*:}" "${DASHBOARD_AUTH#*:}")
  FLOWER_PORT=$(free_port)
  DASHBOARD_PORT=$(free_port)
  (
    umask 077
    grep -v -E '^(REDIS_PASSWORD|FLOWER_BASIC_AUTH|FLOWER_PORT|NX_EXPORT_DASHBOARD_AUTH)=' \
      "$ROOT/.env.example" >"$PROJECT_DIR/.env"
    cat >>"$PROJECT_DIR/.env" <<EOF

# --- generated by deploy/check.sh for this run ---
REDIS_PASSWORD=$REDIS_PASSWORD
FLOWER_BASIC_AUTH=$FLOWER_AUTH
NX_EXPORT_DASHBOARD_AUTH=$DASHBOARD_AUTH
FLOWER_PORT=$FLOWER_PORT
DASHBOARD_PORT=$DASHBOARD_PORT
PYTHON_IMAGE=$ENV_PYTHON_IMAGE
REDIS_IMAGE=$ENV_REDIS_IMAGE
EOF
  )
}

# ---------------------------------------------------------------- containers
containers() {  # containers of one service, by compose's labels
  "$ENGINE" ps -a --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=$1" --format '{{.Names}}' | sort
}
all_containers() {
  "$ENGINE" ps -a --filter "label=com.docker.compose.project=$PROJECT" --format '{{.Names}}'
}
state() { "$ENGINE" inspect -f '{{.State.Status}}' "$1" 2>/dev/null; }

# Runs the container's own health check now (podman 4.3 never schedules them without
# systemd; Docker's first one waits an interval): podman healthcheck run, or the same
# probe through exec.
probe() {
  if [ "$ENGINE" = podman ]; then
    timeout 60 podman healthcheck run "$1" >/dev/null 2>&1
  else
    local test
    test=$(docker inspect -f '{{json .Config.Healthcheck.Test}}' "$1" \
      | python3 -c 'import json, sys; t = json.load(sys.stdin); print(t[1] if t[0] == "CMD-SHELL" else " ".join(t[1:]))')
    timeout 60 docker exec "$1" sh -c "$test" >/dev/null 2>&1
  fi
}
wait_healthy() {  # NAME TIMEOUT
  local deadline=$(($(date +%s) + $2))
  until probe "$1"; do
    [ "$(state "$1")" = running ] || fail "$1 is $(state "$1"), not running"
    [ "$(date +%s)" -lt "$deadline" ] || fail "$1 not healthy after $2 s"
    sleep 1
  done
}

http_code() {  # URL [user:password]
  if [ -n "${2:-}" ]; then
    printf 'user = "%s"\n' "$2" | curl -s -o /dev/null -w '%{http_code}' -m 10 -K - "$1" || true
  else
    curl -s -o /dev/null -w '%{http_code}' -m 10 "$1" || true
  fi
}

# deploy/pytest-celery: pytest-celery's fixtures with the project's worker image and
# the Redis image, through the engine's Docker API (podman's own service for podman).
run_pytest_celery() {  # WORKER-IMAGE
  local venv="$CACHE/pytest-celery-$PYTEST_CELERY_VERSION" wanted
  wanted=$(sha256sum <"$PROJECT_DIR/pyproject.toml" | cut -d' ' -f1)
  if [ "$(cat "$venv/.installed" 2>/dev/null)" != "$wanted" ]; then
    say "installing pytest-celery==$PYTEST_CELERY_VERSION and the project into $venv"
    rm -rf "$venv"
    { python3 -m venv "$venv" && "$venv/bin/python" -m pip install -q "$PROJECT_DIR" \
        "pytest-celery[redis]==$PYTEST_CELERY_VERSION" "pytest-timeout==2.4.0"; } \
      >"$WORK/pytest-celery-pip.log" 2>&1 \
      || { tail -5 "$WORK/pytest-celery-pip.log"; fail "could not install pytest-celery"; }
    echo "$wanted" >"$venv/.installed"
  fi
  local docker_host="${DOCKER_HOST:-}"
  if [ "$ENGINE" = podman ]; then
    docker_host="unix://$WORK/podman.sock"
    podman system service --time=0 "$docker_host" >"$WORK/podman-service.log" 2>&1 &
    SERVICE_PID=$!
    local waited=0
    until [ -S "$WORK/podman.sock" ]; do
      sleep 0.2; waited=$((waited + 1))
      [ "$waited" -lt 100 ] || fail "podman system service did not open its socket"
    done
  fi
  # Run from the project copy: its packages come first on the path.
  if (cd "$PROJECT_DIR" && env ${docker_host:+DOCKER_HOST="$docker_host"} \
      NX_PYTEST_CELERY_WORKER_IMAGE="$1" NX_PYTEST_CELERY_REDIS_IMAGE="$ENV_REDIS_IMAGE" \
      timeout 600 "$venv/bin/python" -m pytest deploy/pytest-celery -q -p no:cacheprovider) \
      >"$WORK/pytest-celery.log" 2>&1; then
    PYTEST_CELERY_SUMMARY=$(tail -1 "$WORK/pytest-celery.log" | tr -d '=' | sed 's/^ *//; s/ *$//')
  else
    grep -E '^(E |FAILED|ERROR)' "$WORK/pytest-celery.log" | head -30 | mask
    tail -3 "$WORK/pytest-celery.log" | mask
    fail "the pytest-celery suite failed"
  fi
  if [ -n "$SERVICE_PID" ]; then
    kill "$SERVICE_PID" 2>/dev/null; wait "$SERVICE_PID" 2>/dev/null || true
    SERVICE_PID=""
  fi
}

teardown() {
  local attempt
  for attempt in 1 2 3; do
    compose down --remove-orphans -v >>"$WORK/down.log" 2>&1 || true
    [ -z "$(all_containers)" ] && break
  done
  # What down leaves (scaled replicas): removed by label.
  local leftover
  for leftover in $(all_containers); do "$ENGINE" rm -f -v "$leftover" >/dev/null 2>&1 || true; done
  "$ENGINE" volume ls -q --filter "label=com.docker.compose.project=$PROJECT" \
    | xargs -r "$ENGINE" volume rm -f >/dev/null 2>&1 || true
  BROUGHT_UP=0
}

# conmon processes not there before this run (podman's, one per container and exec).
new_conmons() {
  comm -13 <(printf '%s\n' "$CONMONS_BEFORE") <(pgrep -x conmon | sort) | tr '\n' ' '
}

# ================================================================ the check
phase "engine"
find_engine
ok "engine: $ENGINE_DESCRIPTION"
CONMONS_BEFORE=$(pgrep -x conmon | sort || true)

phase "base images"
choose_images
ok "base images: $PYTHON_IMAGE; $REDIS_IMAGE"

phase "project build"
prepare_project
# Leftovers of an interrupted earlier run under the same project name.
if [ -n "$(all_containers)" ]; then BROUGHT_UP=1; teardown; fi
compose build >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log" | mask; fail "the project image did not build"; }
ok "project image built"

phase "up"
BROUGHT_UP=1
compose up -d --scale "worker=$WORKERS" >"$WORK/up.log" 2>&1 \
  || { tail -30 "$WORK/up.log" | mask; fail "compose up failed"; }
ok "compose up -d --scale worker=$WORKERS --profile dashboard"

phase "secrets check"
name=$(containers check-secrets | head -1)
[ -n "$name" ] || fail "no check-secrets container"
deadline=$(($(date +%s) + 60))
while [ "$(state "$name")" != exited ]; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "check-secrets did not finish"
  sleep 0.5
done
code=$("$ENGINE" inspect -f '{{.State.ExitCode}}' "$name")
[ "$code" = 0 ] || fail "check-secrets exited $code with the generated secrets"
ok "check-secrets exited 0 with the generated secrets"
refused=$(compose run --rm -e REDIS_PASSWORD=change-me check-secrets 2>&1) && code=0 || code=$?
[ "$code" != 0 ] && grep -q 'refusing to start.*REDIS_PASSWORD' <<<"$refused" \
  || fail "check-secrets accepted REDIS_PASSWORD=change-me (exit $code)"
ok "check-secrets refuses a placeholder password (exit $code)"
CAME_UP+=("check-secrets: exit 0 with real secrets, exit $code with a placeholder")

phase "health"
redis=$(containers redis)
wait_healthy "$redis" 60
ok "redis healthy ($redis)"
CAME_UP+=("redis: $redis healthy")
mapfile -t workers < <(containers worker)
[ "${#workers[@]}" = "$WORKERS" ] || fail "${#workers[@]} worker containers, not $WORKERS"
for worker in "${workers[@]}"; do
  "$ENGINE" exec "$worker" getent hosts redis >/dev/null || fail "$worker cannot resolve redis"
  wait_healthy "$worker" 120
  ok "worker healthy ($worker: resolves redis, answers celery ping)"
done
CAME_UP+=("workers: ${workers[*]} healthy (celery ping)")
for service in flower dashboard; do
  name=$(containers "$service")
  [ -n "$name" ] || fail "no $service container"
  wait_healthy "$name" 90
  ok "$service healthy ($name)"
done
for pair in "flower $FLOWER_PORT $FLOWER_AUTH /" "dashboard $DASHBOARD_PORT $DASHBOARD_AUTH /"; do
  read -r service port auth path <<<"$pair"
  url="http://127.0.0.1:$port$path"
  without=$(http_code "$url")
  with=$(http_code "$url" "$auth")
  [ "$without" = 401 ] || fail "$service answered $without without auth, not 401"
  [ "$with" = 200 ] || fail "$service answered $with with auth, not 200"
  ok "$service on 127.0.0.1:$port: 401 without auth, 200 with it"
  CAME_UP+=("$service: $(containers "$service") healthy, 401 without auth, 200 with it")
done

phase "export"
worker=${workers[0]}
enqueue() {  # SESSION-ID: prints the job's JSON
  timeout 180 "$ENGINE" exec "$worker" nx-export enqueue "/records/$SAMPLE" \
    --session-id "$1" --instrument "$SAMPLE_INSTRUMENT" \
    --start 2026-11-04T08:00:00+00:00 --end 2026-11-04T09:00:00+00:00 \
    --destination local --wait --json 2>"$WORK/enqueue.err"
}
json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
out=$(enqueue "deploy-check-$(date +%s)") || { mask <"$WORK/enqueue.err"; fail "the export failed"; }
job=$(json_field id <<<"$out") || fail "no job id in: $out"
[ "$(json_field satisfied <<<"$out")" = True ] || fail "job $job is not satisfied: $out"
files=$("$ENGINE" exec "$worker" find /archive -type f | wc -l)
[ "$files" -gt 0 ] || fail "the archive volume is empty after the export"
ok "job $job exported to the local archive ($files files in the archive volume)"
CAME_UP+=("export: job $job through the workers into the archive volume")

phase "redis restart"
# Stop, then start: `podman restart` refuses a container others depend on.
# (podman without systemd complains on stderr that it cannot set up health-check timers.)
"$ENGINE" stop "$redis" >>"$WORK/restart.log" 2>&1 || fail "could not stop $redis"
"$ENGINE" start "$redis" >>"$WORK/restart.log" 2>&1 || fail "could not start $redis again"
wait_healthy "$redis" 60
status=$(timeout 60 "$ENGINE" exec "$worker" nx-export status "$job" --json 2>"$WORK/status.err") \
  || { mask <"$WORK/status.err"; fail "job $job is not readable after the restart"; }
ok "redis stopped and started; job $job still reads back ($(json_field state <<<"$status"))"
for worker in "${workers[@]}"; do
  wait_healthy "$worker" 120
done
ok "both workers answer ping again"
out=$(enqueue "deploy-check-after-restart-$(date +%s)") \
  || { mask <"$WORK/enqueue.err"; fail "an export after the restart failed"; }
ok "an export after the restart succeeds (job $(json_field id <<<"$out"))"
CAME_UP+=("redis restart: job $job still readable, workers reconnected, a new export succeeds")

if [ "$RUN_PYTEST_CELERY" = 1 ]; then
  phase "pytest-celery"
  run_pytest_celery "$("$ENGINE" inspect -f '{{.Image}}' "${workers[0]}")"
  ok "pytest-celery: $PYTEST_CELERY_SUMMARY"
  CAME_UP+=("pytest-celery (deploy/pytest-celery): $PYTEST_CELERY_SUMMARY")
fi

phase "down"
teardown
[ -z "$(all_containers)" ] || fail "containers left after down: $(all_containers | tr '\n' ' ')"
left=$("$ENGINE" volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
[ -z "$left" ] || fail "volumes left after down: $left"
ok "down --remove-orphans -v: no container or volume left"
deadline=$(($(date +%s) + 30))
while [ -n "$(new_conmons)" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 1; done
[ -z "$(new_conmons)" ] || fail "conmon processes left running: $(new_conmons)"
ok "no process of this run left running"
end_phase
summary "PASSED"
