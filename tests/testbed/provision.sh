#!/bin/sh
# Build (once) a Debian sid root holding Asterisk 22 and Python 3 headers, for the
# end-to-end tests on a host that has no Asterisk (see README "Testing").
# The root is cached outside the work tree; a finished root is marked by a stamp file.
# Tools added later (SIP_TOOLS) are installed into an existing root once, with their own stamp.
# Usage: provision.sh ROOT
set -eu
ROOT=${1:?usage: provision.sh ROOT}
STAMP="$ROOT/.convai-testbed-v1"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=asterisk,asterisk-dev,asterisk-modules,python3-dev,python3-venv,gcc,make,libc6-dev,pkgconf,ca-certificates
# The SIP test bed: its user agent (SIPp: scripted calls, RFC 4733 keys, load) and the
# load balancer of the scale-out tests (Kamailio with its dispatcher).
SIP_TOOLS="sip-tester kamailio"
SIP_STAMP="$ROOT/.convai-testbed-sip-v2"

add_sip_tools() {
	[ -f "$SIP_STAMP" ] && return 0
	echo "provision.sh: installing $SIP_TOOLS into the test bed" >&2
	# The package lists debootstrap left are used first. Only if they are too old (packages
	# gone from the mirror) are they refreshed; a mirror whose Release file is past its
	# Valid-Until date (a clock ahead of the mirror's) is still accepted then: its
	# signature is checked as always, only the date is not.
	install="DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $SIP_TOOLS"
	chroot "$ROOT" sh -c "$install" >&2 || chroot "$ROOT" sh -c \
		"apt-get update -qq -o Acquire::Check-Valid-Until=false && $install" >&2
	touch "$SIP_STAMP"
}

if [ -f "$STAMP" ]; then
	add_sip_tools
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "provision.sh: building the test bed needs root (debootstrap, chroot)" >&2
	exit 1
fi
if ! command -v debootstrap >/dev/null 2>&1; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
rm -rf "$ROOT.partial"
mkdir -p "$(dirname "$ROOT")"
echo "provision.sh: debootstrap sid into $ROOT (about 1 GB, a few minutes)" >&2
debootstrap --variant=minbase --include="$PACKAGES" sid "$ROOT.partial" "$MIRROR" >"$ROOT.partial.log" 2>&1 || {
	tail -n 30 "$ROOT.partial.log" >&2
	exit 1
}
# The root's asterisk user means nothing on the host; Asterisk runs as root in the bed.
for d in /etc/asterisk /var/lib/asterisk /var/spool/asterisk /var/log/asterisk /var/run/asterisk /var/cache/asterisk; do
	[ -e "$ROOT.partial$d" ] && chown -R root:root "$ROOT.partial$d"
done
rm -rf "$ROOT"
mv "$ROOT.partial" "$ROOT"
mv "$ROOT.partial.log" "$ROOT/.debootstrap.log"
touch "$STAMP"
add_sip_tools
echo "provision.sh: test bed ready in $ROOT" >&2
