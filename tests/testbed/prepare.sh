#!/bin/sh
# Make the Asterisk that the end-to-end tests use ready, then print the test-bed
# root for pytest (CONVAI_TESTBED_ROOT); an empty line means the system Asterisk.
#
# - System Asterisk with its headers (a real PBX host, as root): build and
#   "make install" the module and its venv there.
# - Otherwise: provision (once, cached) a Debian sid root with Asterisk 22,
#   copy this source tree into it and run the same "make all install" inside.
# All progress goes to stderr; stdout carries only the root.
# Usage: prepare.sh TESTBED_ROOT
set -eu
ROOT=${1:?usage: prepare.sh TESTBED_ROOT}
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
NAME=app_elevenlabs_convai

if [ -z "${CONVAI_FORCE_TESTBED:-}" ] && command -v asterisk >/dev/null 2>&1 \
	&& { [ -f /usr/include/asterisk.h ] || [ -f /usr/local/include/asterisk.h ]; }; then
	make -C "$SRC" all install >&2
	if ! command -v sipp >/dev/null 2>&1 || ! command -v kamailio >/dev/null 2>&1; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends sip-tester kamailio >&2
	fi
	echo ""
	exit 0
fi

"$HERE/provision.sh" "$ROOT" >&2
mountpoint -q "$ROOT/proc" || mount -t proc proc "$ROOT/proc"

# A fresh copy of the sources, stamped now (-m): a source older than an object
# that another tree built must still be rebuilt. build/ keeps the wheel venv.
DEST="$ROOT/usr/src/$NAME"
mkdir -p "$DEST"
find "$DEST" -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
tar -C "$SRC" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./out \
	--exclude='__pycache__' --exclude='./pyconvai/_ring*' --exclude='*.egg-info' -cf - . \
	| tar -C "$DEST" -xmf -

# The root trusts what the host trusts (a registry proxy's CA, say): pip there
# verifies TLS against the system store and ignores PIP_CERT.
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
	cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
fi
# CONVAI_ASAN=1 (make asan-test): the module built with AddressSanitizer.
set --
if [ -n "${CONVAI_ASAN:-}" ]; then
	set -- "CFLAGS=-O1 -g -fno-omit-frame-pointer -fsanitize=address" "LDFLAGS=-fsanitize=address"
fi
chroot "$ROOT" env -u PIP_CERT -u PIP_FIND_LINKS -u PIP_EXTRA_INDEX_URL \
	make -C "/usr/src/$NAME" "$@" all install >&2
echo "$ROOT"
