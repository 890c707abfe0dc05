# Sourced by .ci/run, scripts/bench/common.sh and scripts/docker-check.sh: helpers for
# scripts that run medialink on this machine.
# free_port: a TCP port nothing on 127.0.0.1 listens on now.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# short_path: the /m/ID.ext of the link whose JSON (a create's answer) is on stdin.
short_path() { python3 -c 'import json,sys; u=json.load(sys.stdin)["short_url"]; print(u[u.index("/m/"):])'; }
# say: a progress or error line, on stderr so that stdout stays the result.
say() { printf '%s\n' "$*" >&2; }
