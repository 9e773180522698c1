#!/bin/sh
# Container entrypoint: maps NuvIoT's container boot environment (reference/nuviot-runtime.md §1.5:
#   docker run -e InstanceId= -e OrgId= [-e VersionId=] [-e HostId=] -e Environment= -e DeploymentType=
#              -e DeploymentConfig= -e QueueType= -e AccessKey= ...)
# onto the runtime's settings (CONTRACT §2), refuses to start (exit 2, one line on stderr) when a
# required one is missing, logs what it found (no secrets) as one JSON line, then execs the daemon so
# that it is PID 1 and receives SIGTERM itself.
#
# A NUVIOT_* variable that is already set always wins over NuvIoT's name.
#   InstanceId -> NUVIOT_INSTANCE_ID        AccessKey -> NUVIOT_ACCESS_KEY     VersionId -> NUVIOT_SOLUTION_VERSION
#   OrgId -> NUVIOT_ORG_ID   HostId -> NUVIOT_HOST_ID   Environment -> NUVIOT_ENVIRONMENT
#   DeploymentType -> NUVIOT_DEPLOYMENT_TYPE   DeploymentConfig -> NUVIOT_DEPLOYMENT_CONFIG   QueueType -> NUVIOT_QUEUE_TYPE
# Modes:
#   managed     DeploymentType is managed, cloud or shared: NuvIoT runs this instance. InstanceId and
#               AccessKey are required, and the solution URL must be known: NUVIOT_SOLUTION, or
#               NUVIOT_API_URL from which {NUVIOT_API_URL}/api/deployment/instance/full is derived.
#   onpremise   DeploymentType is onpremise: the operator runs it; nothing more is required.
#   standalone  nothing NuvIoT-specific is set: the packaged demo (or NUVIOT_SOLUTION) runs.
# NUVIOT_RUNTIME_BIN overrides the program (tests); the default is the image's nuviot-runtime.
set -eu
# Everything the runtime writes (database, admin token, last good solution) is private to its user: files
# 0600, directories 0700, whatever the storage code asks for.
umask 077

bin="${NUVIOT_RUNTIME_BIN:-nuviot-runtime}"
case "${1:-}" in
    validate | import | --version | -h | --help) exec "$bin" "$@" ;; # tools: no instance, no checks
    run) shift ;;
    *) ;;
esac

refuse() {
    printf 'nuviot-runtime: refusing to start: %s\n' "$1" >&2
    exit 2
}

export NUVIOT_INSTANCE_ID="${NUVIOT_INSTANCE_ID:-${InstanceId:-}}"
export NUVIOT_ACCESS_KEY="${NUVIOT_ACCESS_KEY:-${AccessKey:-}}"
export NUVIOT_SOLUTION_VERSION="${NUVIOT_SOLUTION_VERSION:-${VersionId:-}}"
export NUVIOT_ORG_ID="${NUVIOT_ORG_ID:-${OrgId:-}}"
export NUVIOT_HOST_ID="${NUVIOT_HOST_ID:-${HostId:-}}"
export NUVIOT_ENVIRONMENT="${NUVIOT_ENVIRONMENT:-${Environment:-}}"
export NUVIOT_DEPLOYMENT_TYPE="${NUVIOT_DEPLOYMENT_TYPE:-${DeploymentType:-}}"
export NUVIOT_DEPLOYMENT_CONFIG="${NUVIOT_DEPLOYMENT_CONFIG:-${DeploymentConfig:-}}"
export NUVIOT_QUEUE_TYPE="${NUVIOT_QUEUE_TYPE:-${QueueType:-}}"

deployment_type=$(printf '%s' "$NUVIOT_DEPLOYMENT_TYPE" | tr '[:upper:]' '[:lower:]')
case "$deployment_type" in
    managed | cloud | shared) mode=managed ;;
    onpremise) mode=onpremise ;;
    "")
        if [ -n "$NUVIOT_INSTANCE_ID$NUVIOT_ORG_ID$NUVIOT_HOST_ID$NUVIOT_ENVIRONMENT" ]; then
            mode=onpremise
        else
            mode=standalone
        fi
        ;;
    *) refuse "DeploymentType '$NUVIOT_DEPLOYMENT_TYPE' is not one of cloud, managed, onpremise, shared" ;;
esac

if [ "$mode" = managed ]; then
    [ -n "$NUVIOT_INSTANCE_ID" ] || refuse "InstanceId (or NUVIOT_INSTANCE_ID) is required when DeploymentType is $deployment_type"
    [ -n "$NUVIOT_ACCESS_KEY" ] || refuse "AccessKey (or NUVIOT_ACCESS_KEY) is required when DeploymentType is $deployment_type"
    if [ -z "${NUVIOT_SOLUTION:-}" ]; then
        [ -n "${NUVIOT_API_URL:-}" ] || refuse "no solution URL: set NUVIOT_SOLUTION or NUVIOT_API_URL when DeploymentType is $deployment_type"
        export NUVIOT_SOLUTION="${NUVIOT_API_URL%/}/api/deployment/instance/full"
    fi
    case "$NUVIOT_SOLUTION" in
        http://* | https://*) ;;
        *) refuse "NUVIOT_SOLUTION must be an http(s) URL when DeploymentType is $deployment_type" ;;
    esac
fi

working_storage=$(printf '%s' "${NUVIOT_WORKING_STORAGE:-}" | tr '[:upper:]' '[:lower:]')
if [ "$working_storage" = cloud ] && [ -z "${NUVIOT_CLOUD_URL:-}" ]; then
    refuse "NUVIOT_CLOUD_URL is required when NUVIOT_WORKING_STORAGE is cloud"
fi

# The data directory is the runtime's alone (0700): the image's /data is, and so is a volume or bind mount
# the runtime's user owns (one it does not own is left as the operator made it).
data_dir="${NUVIOT_DATA_DIR:-}"
if [ -n "$data_dir" ] && [ -d "$data_dir" ] && [ "$(stat -c %u "$data_dir")" = "$(id -u)" ]; then
    chmod 0700 "$data_dir"
fi

# one JSON log line, like the daemon's own (values are escaped; the access key is never shown)
json() {
    printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | tr -d '\n\r\t'
}
if [ -n "$NUVIOT_ACCESS_KEY" ]; then access_key="set"; else access_key="unset"; fi
printf '{"event":"entrypoint_started","level":"info","logger":"entrypoint","mode":"%s","instanceId":"%s","orgId":"%s","hostId":"%s","environment":"%s","deploymentType":"%s","deploymentConfig":"%s","queueType":"%s","solution":"%s","solutionVersion":"%s","accessKey":"%s"}\n' \
    "$mode" "$(json "$NUVIOT_INSTANCE_ID")" "$(json "$NUVIOT_ORG_ID")" "$(json "$NUVIOT_HOST_ID")" \
    "$(json "$NUVIOT_ENVIRONMENT")" "$(json "$NUVIOT_DEPLOYMENT_TYPE")" "$(json "$NUVIOT_DEPLOYMENT_CONFIG")" \
    "$(json "$NUVIOT_QUEUE_TYPE")" "$(json "${NUVIOT_SOLUTION:-packaged demo}" | sed 's#//[^/@]*@#//***@#')" \
    "$(json "$NUVIOT_SOLUTION_VERSION")" "$access_key"

exec "$bin" run "$@"
