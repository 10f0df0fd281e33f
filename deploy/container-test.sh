#!/usr/bin/env bash
# `make container-test`: build the serve image from the Dockerfile and run it for real, with no image pulled.
#   1. base image: a minimal Debian bookworm with python3 and python3-venv, by debootstrap from the Debian mirror,
#      imported into podman (cached: `podman rmi localhost/mlops-debian-python3:bookworm` to make it again);
#   2. podman build --build-arg BASE=<that image> (pip installs mlops-cli[serve,onnx] from PyPI during the build);
#   3. a registry from sample_data: the demo's first model, with ONNX and skops, promoted to production;
#   4. the container run as the Kubernetes manifest runs it: read-only root, /tmp a tmpfs, the registry mounted
#      read-only, no capabilities; wait for /readyz, POST /predict, promote flights:2 on the host and see the
#      container switch to it, run the HEALTHCHECK, then `podman stop` (SIGTERM) and expect exit 0 after the drain.
# Root only (podman and debootstrap). Installs podman, runc and debootstrap with apt-get when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
umask 022 # the registry's files must be readable by the container's user (uid 10001)

VENV_BIN=${VENV_BIN:-.venv/bin}
OUT=build/container-test
BASE_IMAGE=${BASE_IMAGE:-localhost/mlops-debian-python3:bookworm}
IMAGE=${IMAGE:-localhost/mlops:container-test}
NAME=mlops-container-test
PORT=${PORT:-18080}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
URL="http://127.0.0.1:$PORT"

step() { printf '\n== %s\n' "$*"; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f s", b - a }'; }
fail() {
    echo "error: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || fail "run as root (podman and debootstrap need it)"
missing=()
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
    step "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# cgroupfs and runc: there is no systemd here to manage cgroups. Without systemd podman cannot set the
# HEALTHCHECK's timer either and says so on every start and stop; this script runs the check itself (step 4).
podman() {
    command podman --cgroup-manager=cgroupfs --runtime=runc "$@" 2> >(grep -v 'unable to get systemd connection' >&2)
}
# podman as root asks runc for file and process limits above what this machine grants ("error setting rlimit"):
# ask for modest ones, plenty for the server.
LIMITS=(--ulimit nofile=8192:8192 --ulimit nproc=4096:4096)

rootfs=''
cleanup() {
    podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
    [ -z "$rootfs" ] || rm -rf "$rootfs"
}
trap cleanup EXIT
mkdir -p "$OUT"

# --- 1. the base image ----------------------------------------------------------------------------------------
if podman image exists "$BASE_IMAGE"; then
    step "base image $BASE_IMAGE (cached)"
else
    step "debootstrap Debian bookworm with python3 and python3-venv -> $BASE_IMAGE"
    rootfs=$(mktemp -d /var/tmp/mlops-rootfs.XXXXXX)
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" "$MIRROR" \
        >"$OUT/debootstrap.log" 2>&1 || fail "debootstrap failed (see $OUT/debootstrap.log)"
    # The certificate authorities this host adds (a TLS-inspecting proxy, say): pip in the build must trust what
    # the host trusts. Debian's pip reads the system bundle.
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >/dev/null 2>&1
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --quiet --change 'CMD ["/bin/bash"]' \
        --message 'debootstrap --variant=minbase --include=python3,python3-venv bookworm' - "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs" && rootfs=''
fi
podman run --rm "${LIMITS[@]}" "$BASE_IMAGE" python3 --version

# --- 2. the image ---------------------------------------------------------------------------------------------
step "podman build --build-arg BASE=$BASE_IMAGE -t $IMAGE ."
# The docker format keeps HEALTHCHECK (the OCI image format has no such field).
started=$SECONDS
podman build --format docker --build-arg BASE="$BASE_IMAGE" -t "$IMAGE" . >"$OUT/build.log" 2>&1 ||
    { tail -n 30 "$OUT/build.log" >&2 && fail "podman build failed (all of it in $OUT/build.log)"; }
echo "built in $((SECONDS - started)) s: $(podman image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%d MB", $1 / 1e6}')," \
    "user $(podman image inspect -f '{{.Config.User}}' "$IMAGE"), healthcheck" \
    "$(podman image inspect -f '{{.HealthCheck.Test}}' "$IMAGE" | cut -c1-60)..."

# --- 3. a registry --------------------------------------------------------------------------------------------
step "registry $OUT/registry: flights:1 and flights:2 (sample_data/train.py) with ONNX and skops, 1 in production"
rm -rf "$OUT/registry"
export MLOPS_REGISTRY="$OUT/registry"
"$VENV_BIN/python" sample_data/train.py sample_data/reference.parquet "$OUT/flights-v1.joblib" --split-dir "$OUT" \
    >/dev/null
"$VENV_BIN/mlops" register "$OUT/flights-v1.joblib" --name flights --train-data "$OUT/train.parquet" \
    --target delayed --eval-data "$OUT/eval.parquet" --formats onnx,skops -q
"$VENV_BIN/mlops" models promote flights:1 production --reason "container test"
"$VENV_BIN/python" sample_data/train.py sample_data/reference.parquet "$OUT/flights-v2.joblib" --max-iter 60 \
    --split-dir "$OUT" >/dev/null
"$VENV_BIN/mlops" register "$OUT/flights-v2.joblib" --name flights --train-data "$OUT/train.parquet" \
    --target delayed --eval-data "$OUT/eval.parquet" --formats onnx,skops -q

# --- 4. run it ------------------------------------------------------------------------------------------------
step "podman run --read-only --tmpfs /tmp -v REGISTRY:/registry:ro $IMAGE flights@production --host 0.0.0.0 --workers 2"
podman rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
podman run -d --name "$NAME" "${LIMITS[@]}" --read-only --tmpfs /tmp --cap-drop ALL \
    --security-opt no-new-privileges -v "$PWD/$OUT/registry:/registry:ro" -p "127.0.0.1:$PORT:8080" \
    "$IMAGE" flights@production --host 0.0.0.0 --workers 2 >/dev/null
started=$SECONDS start=$EPOCHREALTIME
until python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$URL/readyz" 2>/dev/null; do
    if [ "$(podman inspect -f '{{.State.Running}}' "$NAME")" != true ]; then
        podman logs "$NAME" >&2
        fail "the container stopped before it was ready"
    fi
    [ $((SECONDS - started)) -lt 120 ] || { podman logs "$NAME" >&2 && fail "not ready after 120 s"; }
    sleep 0.5
done
echo "ready after $(since "$start"): $(python3 -c 'import sys, urllib.request
print(urllib.request.urlopen(sys.argv[1]).read().decode()[:160] + "...")' "$URL/readyz")"
podman logs "$NAME"

predict() {
    "$VENV_BIN/python" - "$URL/predict" "$1" <<'EOF'
import json
import sys
import urllib.request

import pandas as pd

rows = pd.read_parquet("sample_data/current.parquet").head(3)
body = {
    "rows": json.loads(rows.drop(columns=["delayed", "date"]).to_json(orient="records")),
    "ids": [f"{r.carrier}{r.flight}-{r.date:%m%d}" for r in rows.itertuples()],
}
request = urllib.request.Request(
    sys.argv[1], data=json.dumps(body).encode(), headers={"content-type": "application/json"}
)
with urllib.request.urlopen(request, timeout=10) as answer:
    print(answer.status, "X-Model-Version:", answer.headers["X-Model-Version"])
    reply = json.load(answer)
for prediction in reply["predictions"]:
    print(json.dumps(prediction))
assert len(reply["predictions"]) == 3 and all(p["model_version"] == sys.argv[2] for p in reply["predictions"])
EOF
}
step "POST $URL/predict: the first 3 flights of sample_data/current.parquet"
predict 1

step "mlops models promote flights:2 production (on the host): the container follows the alias"
"$VENV_BIN/mlops" models promote flights:2 production --reason "container test: hot switch"
started=$SECONDS start=$EPOCHREALTIME
# Each worker switches on its own: wait until both have (the switch counter is summed over the workers).
until python3 -c 'import sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=1).read().decode()
switched = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("mlops_serve_alias_switches_total{") and "result=\"switched\"" in line)
sys.exit(switched < 2)' "$URL/metrics" 2>/dev/null; do
    [ $((SECONDS - started)) -lt 30 ] || fail "the workers did not both switch to flights:2 within 30 s"
    sleep 0.2
done
echo "both workers serve version 2 after $(since "$start")"
predict 2

step "HEALTHCHECK (the image's own command, run by podman)"
podman healthcheck run "$NAME" || fail "the HEALTHCHECK failed"
echo "health: $(podman inspect -f '{{.State.Health.Status}}' "$NAME")"

step "podman stop -t 45 (SIGTERM; SIGKILL after 45 s would give exit 137)"
start=$EPOCHREALTIME
podman stop -t 45 "$NAME" >/dev/null
code=$(podman inspect -f '{{.State.ExitCode}}' "$NAME")
echo "exited $code after $(since "$start")"
[ "$code" -eq 0 ] || { podman logs "$NAME" >&2 && fail "the server did not exit 0 on SIGTERM"; }
echo
echo "container test passed: $IMAGE built on $BASE_IMAGE, served flights@production from a read-only registry," \
    "drained and exited 0 on SIGTERM"
