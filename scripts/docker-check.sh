#!/usr/bin/env bash
# Builds the image (`docker build .`) and checks what an operator relies on: its size
# (under 40 MB), a non-root user, a HEALTHCHECK that turns healthy, a verified JPEG
# served from an origin on the Docker bridge, names resolving inside the image, and
# links that survive a restart on the /data volume. Needs a Docker engine that can pull
# rust:1-bookworm or already holds it. Everything stays on this machine: the origin
# listens on the bridge's gateway address.
# Removes only what it made (container, volume, origin); keeps the image, tagged
# medialink:check.
#
#   scripts/docker-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/local.sh
fail() { say "FAIL: $*"; exit 1; }
docker info >/dev/null 2>&1 || { say "no Docker engine answers here ('docker info' fails): nothing to check"; exit 2; }

name=medialink-check-$$
vol=medialink-check-$$
origin_dir=$(mktemp -d)
origin_pid=""
cleanup() {
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker volume rm "$vol" >/dev/null 2>&1 || true
  [ -n "$origin_pid" ] && kill "$origin_pid" 2>/dev/null || true
  rm -rf "$origin_dir"
}
trap cleanup EXIT

say "docker build ."
docker build --iidfile "$origin_dir/iid" . >&2
image=$(cat "$origin_dir/iid")
docker tag "$image" medialink:check
size=$(docker image inspect --format '{{.Size}}' "$image")
say "image $image: $size bytes ($((size / 1000000)) MB)"
[ "$size" -lt 40000000 ] || fail "the image is $size bytes, not under 40 MB"
user=$(docker image inspect --format '{{.Config.User}}' "$image")
case "$user" in "" | root | 0 | 0:*) fail "the image runs as root ($user)" ;; esac

# The host's address on the default bridge: the network's gateway, which older engines
# leave unset in the network's config, so read off the bridge interface when it is.
gw=$(docker network inspect bridge --format '{{range .IPAM.Config}}{{.Gateway}}{{end}}')
if [ -z "$gw" ]; then
  bridge=$(docker network inspect bridge --format '{{index .Options "com.docker.network.bridge.name"}}')
  gw=$(ip -4 -o addr show "${bridge:-docker0}" | awk '{split($4, a, "/"); print a[1]; exit}')
fi
[ -n "$gw" ] || fail "cannot tell the host's address on Docker's bridge"
cp tests/fixtures/photo.jpg "$origin_dir/photo.jpg"
port=$(free_port)
python3 -m http.server "$port" --bind "$gw" --directory "$origin_dir" >/dev/null 2>&1 &
origin_pid=$!

run() {
  docker run -d --name "$name" -v "$vol:/data" -p 127.0.0.1::8080 \
    -e MEDIALINK_API_TOKENS=check --health-interval 1s "$image" \
    serve --allow-upstream-cidr "$gw/32" >/dev/null
  local health=""
  for _ in $(seq 1 60); do
    health=$(docker inspect --format '{{.State.Health.Status}}' "$name")
    [ "$health" = healthy ] && break
    sleep 0.5
  done
  [ "$health" = healthy ] || { docker logs "$name" >&2; fail "the HEALTHCHECK did not turn healthy"; }
  hostport=$(docker port "$name" 8080/tcp | head -1)
}
run
say "healthy; serving on $hostport"
link=$(curl -sf "http://$hostport/api/v1/links" -H 'authorization: Bearer check' \
  -d "{\"url\":\"http://$gw:$port/photo.jpg\",\"kind\":\"image\",\"verify\":true}")
path=$(short_path <<<"$link")
curl -sf -D "$origin_dir/head" -o "$origin_dir/got" "http://$hostport$path"
cmp -s "$origin_dir/got" tests/fixtures/photo.jpg || fail "$path did not serve the origin's bytes"
grep -qi '^content-type: image/jpeg' "$origin_dir/head" || fail "$path did not say image/jpeg"
[ "$(docker exec "$name" /usr/local/bin/medialink --version | head -1)" ] || fail "--version printed nothing"
# Names resolve inside the image (glibc's resolver, /etc/hosts): `localhost` must be
# found, and refused as loopback; a name that resolved to nothing would be accepted.
code=$(curl -s -o "$origin_dir/dns" -w '%{http_code}' "http://$hostport/api/v1/links" \
  -H 'authorization: Bearer check' -d '{"url":"http://localhost/x.jpg"}')
[ "$code" = 400 ] && grep -q forbidden_upstream "$origin_dir/dns" ||
  fail "http://localhost/ was not resolved and refused inside the image ($code: $(cat "$origin_dir/dns"))"

say "restarting on the same volume"
docker rm -f "$name" >/dev/null
run
curl -sf -o "$origin_dir/again" "http://$hostport$path"
cmp -s "$origin_dir/again" tests/fixtures/photo.jpg || fail "$path was lost with the container"
say "OK: $((size / 1000000)) MB, user $user, healthy, $path served byte-exact before and after a restart"
