#!/usr/bin/env bash
# The extension's tests (tests/extension, the end-to-end runs included) in a real Inkscape 1.4.
#
# Debian 12 ships Inkscape 1.2.2; most users run 1.4. This script builds a Debian trixie root
# with Inkscape 1.4 and Xvfb once (mmdebstrap, packages from Debian's registry only), keeps it
# in a cache folder named after a hash of its recipe (so a changed recipe builds a new one), and
# runs the extension's test suite inside it under trixie's python3 and the inkex Inkscape 1.4
# bundles, exactly as `make test` runs it under Debian 12's Inkscape 1.2.
#
# The root is entered with `unshare --mount` + `chroot`: the network is the host's, so the
# extension in the root reaches a daemon on the host's loopback. The daemon and the
# `clipasso` commands need the project's venv (torch), which is the host's: inside the root,
# CLIPASSO_PYTHON is a small wrapper that chroots back into the host's own root (bind-mounted
# at /run/host) and runs the venv's Python there. The checkout and /tmp are mounted at the same
# paths in both, so every path a test passes means the same file on both sides.
#
# usage: tests/inkscape14/run.sh [PYTEST ARGS...]   (default: the whole tests/extension suite)
#        tests/inkscape14/run.sh --exec COMMAND...  (any command in the root, from the checkout)
# env:   CLIPASSO_INKSCAPE14_CACHE  where the root is kept (default ~/.cache/clipasso-inkscape14)
#        CLIPASSO_PYTHON            the venv's Python on the host (default .venv/bin/python)
#        CI=true                    a root that cannot be built is a failure, not a skip
#        INKSCAPE14_BUILD_ONLY=1    build (or find) the root, run nothing
set -euo pipefail
{ # read whole before it runs, so an edit to this file cannot change a run under way

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
SAY="inkscape14:"

# --- the recipe: anything here changes the hash, hence the root ------------------------------
SUITE=trixie
MIRROR=http://deb.debian.org/debian
# what `make test` installs for 1.2 (APT_TEST_PACKAGES), less Chromium: Inkscape's Python
# dependencies are only Recommends, so they are named.
PACKAGES="inkscape xvfb xauth python3 python3-lxml python3-numpy python3-cssselect
python3-tinycss2 python3-scour python3-packaging python3-pytest ca-certificates"
MMDEBSTRAP_OPTIONS=(
	--variant=essential
	--aptopt='APT::Install-Recommends "false"'
	--dpkgopt='path-exclude=/usr/share/doc/*'
	--dpkgopt='path-exclude=/usr/share/man/*'
	--dpkgopt='path-exclude=/usr/share/locale/*'
	--dpkgopt='path-exclude=/usr/share/help/*'
	--dpkgopt='path-include=/usr/share/locale/locale.alias'
)
RECIPE_VERSION=1
RECIPE="$RECIPE_VERSION|$SUITE|$MIRROR|$(echo $PACKAGES)|${MMDEBSTRAP_OPTIONS[*]}"
HASH=$(printf '%s' "$RECIPE" | sha256sum | cut -c1-16)

CACHE=${CLIPASSO_INKSCAPE14_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clipasso-inkscape14}
ROOT="$CACHE/root-$HASH"
HOST_PYTHON=${CLIPASSO_PYTHON:-$REPO/.venv/bin/python}

# Cannot run here: one line; a failure in CI (where it must run), a skip elsewhere.
cannot() {
	if [ "${CI:-}" = true ]; then
		echo "$SAY cannot run the Inkscape 1.4 tests: $1" >&2
		exit 1
	fi
	echo "$SAY the Inkscape 1.4 tests are skipped: $1"
	exit 0
}

[ "$(id -u)" = 0 ] || cannot "building and entering the Inkscape 1.4 root needs root (sudo make test-inkscape14)"
for program in unshare chroot mount flock sha256sum; do
	command -v "$program" >/dev/null || cannot "no '$program' here"
done
if ! command -v mmdebstrap >/dev/null; then
	if [ -d "$ROOT" ] && [ -f "$ROOT/.complete" ]; then
		: # a cached root needs no mmdebstrap
	elif command -v apt-get >/dev/null; then
		echo "$SAY installing mmdebstrap (Debian package) to build the Inkscape 1.4 root"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap \
			>/dev/null 2>&1 ||
			{ apt-get update -q >/dev/null 2>&1 &&
				DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
					mmdebstrap >/dev/null 2>&1; } ||
			cannot "mmdebstrap is not installed and apt-get could not install it"
	else
		cannot "mmdebstrap is not installed (it is a Debian package: apt-get install mmdebstrap)"
	fi
fi
unshare --mount true 2>/dev/null || cannot "'unshare --mount' is not allowed here (a container without CAP_SYS_ADMIN?)"
[ -x "$HOST_PYTHON" ] || cannot "no project Python at $HOST_PYTHON (run make venv first)"

# --- build (once per recipe) -----------------------------------------------------------------
build_root() {
	local started partial
	started=$(date +%s)
	partial="$ROOT.partial"
	rm -rf --one-file-system "$partial"
	echo "$SAY building a Debian $SUITE root with Inkscape 1.4 in $ROOT (once; a few minutes)"
	if ! mmdebstrap --quiet "${MMDEBSTRAP_OPTIONS[@]}" --include="$(echo $PACKAGES | tr ' ' ,)" \
		"$SUITE" "$partial" "$MIRROR" >"$CACHE/build.log" 2>&1; then
		tail -n 20 "$CACHE/build.log" >&2
		rm -rf --one-file-system "$partial"
		echo "$SAY mmdebstrap failed (log: $CACHE/build.log)" >&2
		return 1
	fi
	# (set -e does not hold in a function called from an || list: each step says so itself)
	chroot "$partial" dpkg-query -W -f='${Package} ${Version}\n' >"$partial/.packages" || return 1
	echo "$RECIPE" >"$partial/.recipe" || return 1
	touch "$partial/.complete" || return 1
	mv "$partial" "$ROOT" || return 1
	# roots of older recipes
	find "$CACHE" -mindepth 1 -maxdepth 1 -name 'root-*' ! -name "root-$HASH" -exec rm -rf {} +
	echo "$SAY built in $(($(date +%s) - started)) s: $(grep '^inkscape ' "$ROOT/.packages"), $(du -sh "$ROOT" | cut -f1)"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9 # one build at a time; a second caller waits for it, then finds the root ready
if [ ! -f "$ROOT/.complete" ]; then
	build_root || { [ "${CI:-}" = true ] && exit 1; cannot "the root could not be built (see above)"; }
else
	echo "$SAY cached root $ROOT ($(grep '^inkscape ' "$ROOT/.packages"))"
fi
flock -u 9
[ "${INKSCAPE14_BUILD_ONLY:-}" = 1 ] && exit 0

# --- run the suite inside -------------------------------------------------------------------
# Mount points the root needs for this checkout (the only writes to the cached root).
mkdir -p "$ROOT$REPO" "$ROOT/run/host"
RUN=$(mktemp -d /tmp/clipasso-inkscape14.XXXXXX)
trap 'rm -rf "$RUN"' EXIT
mkdir -p "$RUN/home"
cat >"$RUN/host-python" <<EOF
#!/bin/sh
# The venv's Python runs on the host: back into the host's root, same working folder.
exec chroot /run/host /bin/sh -c 'cd "\$0" 2>/dev/null || cd /; exec "\$@"' "\$PWD" "$HOST_PYTHON" "\$@"
EOF
chmod +x "$RUN/host-python"

INNER=(
	env -i "HOME=$RUN/home" "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin" "LANG=C.UTF-8"
	"TMPDIR=/tmp" "CLIPASSO_PYTHON=$RUN/host-python" "CI=${CI:-}"
	"PYTHONPATH=$REPO:/usr/share/inkscape/extensions"
)
if [ "${1:-}" = --exec ]; then # any command in the root, from the checkout (for debugging)
	shift
	INNER+=(/bin/sh -c 'cd "$0" && exec "$@"' "$REPO" "$@")
else
	[ $# -gt 0 ] || set -- .
	# The same command as the Makefile's run under Debian 12's Inkscape Python.
	INNER+=(
		/bin/sh -c 'cd "$0/tests/extension" && exec python3 -m pytest -p no:cacheprovider -c /dev/null --rootdir=. "$@"'
		"$REPO" "$@"
	)
fi
# The root is mounted read-only on itself, so a run never changes the cached root; /tmp, the
# checkout, /dev and /proc are the host's, and the host's whole tree is at /run/host.
unshare --mount --propagation private -- /bin/bash -euo pipefail -c '
	root=$1 repo=$2; shift 2
	mount --bind "$root" "$root"
	mount -o remount,bind,ro "$root"
	mount --rbind / "$root/run/host"
	mount --rbind /dev "$root/dev"
	mount -t proc proc "$root/proc"
	mount --rbind /sys "$root/sys"
	mount --rbind /tmp "$root/tmp"
	mount --bind "$repo" "$root$repo"
	exec chroot "$root" "$@"
' inkscape14 "$ROOT" "$REPO" "${INNER[@]}"
exit
}
