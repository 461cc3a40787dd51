#!/usr/bin/env bash
# Install the Debian packages LabShare's tests and PDF/browser features need (Debian 12).
#
#   chromium            Playwright browser tests use the system browser (no `playwright install`)
#   fonts-wqy-microhei  CJK font: without it every Chinese character renders as a box (browser, PDF)
#   mosquitto           MQTT broker the integration tests start privately (and production uses)
#   mosquitto-clients   mosquitto_pub / mosquitto_sub for operators
#   influxdb            InfluxDB 1.6.7 (`influxd`), started privately by the integration tests
#   poppler-utils       pdftoppm / pdftotext to check generated PDFs
#   poppler-data        CJK encodings for poppler (needed to render non-embedded Chinese fonts)
#
# Idempotent: packages already installed are left alone, and when all are present the script
# returns at once without touching the network. It does not start any system service.
# Needs root (or sudo) only when something must be installed.
set -euo pipefail

PACKAGES=(chromium fonts-wqy-microhei mosquitto mosquitto-clients influxdb poppler-utils poppler-data)

missing=()
for pkg in "${PACKAGES[@]}"; do
    # dpkg -s succeeds for removed-but-not-purged packages too; check the real status.
    status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
    if [[ "$status" != "installed" ]]; then
        missing+=("$pkg")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-system-packages: all present (${PACKAGES[*]})"
    exit 0
fi

echo "install-system-packages: installing ${missing[*]}"
SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        echo "install-system-packages: need root to install ${missing[*]}" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"

# Verify, so a partial failure is loud.
for pkg in "${missing[@]}"; do
    status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
    if [[ "$status" != "installed" ]]; then
        echo "install-system-packages: $pkg is still not installed" >&2
        exit 1
    fi
done
echo "install-system-packages: done"
