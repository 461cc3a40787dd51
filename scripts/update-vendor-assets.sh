#!/usr/bin/env bash
# Re-fetch the front-end assets vendored in web/static/vendor/ from the npm registry.
#
# Why vendored: users in mainland China often cannot reach public CDNs, and the tests run
# without internet, so every page must work from files served by LabShare itself.
#
# The versions below are pinned; change them here (and in web/static/vendor/README.md) to
# upgrade. The script is reproducible: running it twice gives byte-identical files.
# sourceMappingURL comments are stripped because the .map files are not vendored (the browser
# would otherwise request them and log 404s).
#
# Usage: scripts/update-vendor-assets.sh        (needs node + npm and access to the npm registry)
set -euo pipefail

BOOTSTRAP_VERSION=5.3.9
BOOTSTRAP_ICONS_VERSION=1.13.2
HTMX_VERSION=2.0.11
ECHARTS_VERSION=6.1.0

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENDOR="$REPO_ROOT/web/static/vendor"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

fetch() {  # fetch NAME VERSION -> unpacks into $WORK/NAME/package
    local name="$1" version="$2" tarball
    mkdir -p "$WORK/$name"
    tarball="$(cd "$WORK/$name" && npm pack --silent "$name@$version" | tail -n 1)"
    tar -xzf "$WORK/$name/$tarball" -C "$WORK/$name"
    local got
    got="$(node -p "require('$WORK/$name/package/package.json').version")"
    if [[ "$got" != "$version" ]]; then
        echo "error: asked npm for $name@$version but got $got" >&2
        exit 1
    fi
}

# Copy SRC to DST, removing "//# sourceMappingURL=..." and "/*# sourceMappingURL=... */".
copy_strip_maps() {
    local src="$1" dst="$2"
    mkdir -p "$(dirname "$dst")"
    sed -E -e 's#/\*[#@] sourceMappingURL=[^*]*\*/##g' -e 's#//[#@] sourceMappingURL=.*$##' "$src" > "$dst"
    if grep -q 'sourceMappingURL=' "$dst"; then
        echo "error: sourceMappingURL left in $dst" >&2
        exit 1
    fi
}

fetch bootstrap "$BOOTSTRAP_VERSION"
fetch bootstrap-icons "$BOOTSTRAP_ICONS_VERSION"
fetch htmx.org "$HTMX_VERSION"
fetch echarts "$ECHARTS_VERSION"

rm -rf "$VENDOR/bootstrap" "$VENDOR/bootstrap-icons" "$VENDOR/htmx" "$VENDOR/echarts"

# Bootstrap: minified CSS and the JS bundle (includes Popper).
P="$WORK/bootstrap/package"
copy_strip_maps "$P/dist/css/bootstrap.min.css" "$VENDOR/bootstrap/css/bootstrap.min.css"
copy_strip_maps "$P/dist/js/bootstrap.bundle.min.js" "$VENDOR/bootstrap/js/bootstrap.bundle.min.js"
cp "$P/LICENSE" "$VENDOR/bootstrap/LICENSE"

# Bootstrap Icons: the CSS refers to ./fonts/bootstrap-icons.woff2 and .woff.
P="$WORK/bootstrap-icons/package"
copy_strip_maps "$P/font/bootstrap-icons.min.css" "$VENDOR/bootstrap-icons/bootstrap-icons.min.css"
mkdir -p "$VENDOR/bootstrap-icons/fonts"
cp "$P/font/fonts/bootstrap-icons.woff2" "$P/font/fonts/bootstrap-icons.woff" "$VENDOR/bootstrap-icons/fonts/"
cp "$P/LICENSE" "$VENDOR/bootstrap-icons/LICENSE"

# htmx 2.x.
P="$WORK/htmx.org/package"
copy_strip_maps "$P/dist/htmx.min.js" "$VENDOR/htmx/htmx.min.js"
cp "$P/LICENSE" "$VENDOR/htmx/LICENSE"

# Apache ECharts (full build). Apache-2.0 asks that the NOTICE travel with the code.
P="$WORK/echarts/package"
copy_strip_maps "$P/dist/echarts.min.js" "$VENDOR/echarts/echarts.min.js"
cp "$P/LICENSE" "$VENDOR/echarts/LICENSE"
cp "$P/NOTICE" "$VENDOR/echarts/NOTICE"
# The bundle embeds parts of d3.js (BSD-3-Clause); its LICENSE points at licenses/LICENSE-d3.
mkdir -p "$VENDOR/echarts/licenses"
cp "$P/licenses/LICENSE-d3" "$VENDOR/echarts/licenses/LICENSE-d3"

echo "vendored: bootstrap $BOOTSTRAP_VERSION, bootstrap-icons $BOOTSTRAP_ICONS_VERSION, htmx.org $HTMX_VERSION, echarts $ECHARTS_VERSION"
(cd "$VENDOR" && find . -type f ! -name README.md | sort | xargs sha256sum)
