#!/bin/sh
# The image's entrypoint: `docker-entrypoint.sh COMMAND...` runs COMMAND as the service user.
# Started as root (the image's default, and what a root shell's `docker compose up` gives), it makes
# the workspace writable for the service user (uid 1000) whoever owns the bind-mounted ./workspace:
# that one directory and its log file only, nothing else, as the official postgres and redis images
# do; then it drops to that uid (setpriv: no supplementary groups, no shell left as root) and execs
# COMMAND. Started as any other uid (`docker run --user`, compose `user:`), it runs COMMAND as that uid.
#   RERANK_WORKSPACE (default /workspace), RERANK_UID / RERANK_GID (default 1000)
set -eu
workspace=${RERANK_WORKSPACE:-/workspace}
uid=${RERANK_UID:-1000}
gid=${RERANK_GID:-$uid}

if [ "$(id -u)" != 0 ]; then
  exec "$@"
fi
mkdir -p "$workspace"
if ! setpriv --reuid="$uid" --regid="$gid" --clear-groups test -w "$workspace"; then
  echo "docker-entrypoint: $workspace belongs to uid $(stat -c %u "$workspace"); giving it to uid $uid, who runs the server" >&2
  chown "$uid:$gid" "$workspace"
fi
log="$workspace/vllm.log"
if [ -e "$log" ] && ! setpriv --reuid="$uid" --regid="$gid" --clear-groups test -w "$log"; then
  chown "$uid:$gid" "$log"
fi
# The service user's home (caches of vLLM and torch.compile); without an entry in /etc/passwd: the workspace.
home=$(getent passwd "$uid" | cut -d: -f6) || true
HOME=${home:-$workspace}
export HOME
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- "$@"
