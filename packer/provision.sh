#!/bin/bash
# Runs a role's DIB element inside a Packer build VM: the element's packages,
# static files and install.d/post-install.d scripts, then imagekit-finish's
# finalise step, exactly the files disk-image-create uses. Run as root.
set -eux -o pipefail

element=/tmp/imagekit-element
finish=/tmp/imagekit-finish
export DEBIAN_FRONTEND=noninteractive
export ARCH=${ARCH:-amd64}
export DIB_IMAGEKIT_ADMIN_USER=${DIB_IMAGEKIT_ADMIN_USER:-admin}

# The build VM's cloud-init must be finished before we change the system.
cloud-init status --wait || true

# A proxy for this build only (servers of a cloud that reach no mirror directly).
proxy_conf=/etc/apt/apt.conf.d/00imagekit-build-proxy
if [ -n "${IMAGEKIT_APT_PROXY:-}" ]; then
    echo "Acquire::http::Proxy \"${IMAGEKIT_APT_PROXY}\";" > "$proxy_conf"
fi

# Install from the build mirrors; the image gets its own apt sources at the end.
if [ -n "${IMAGEKIT_BUILD_APT_MAIN:-}" ]; then
    DIB_IMAGEKIT_APT_MAIN=$IMAGEKIT_BUILD_APT_MAIN \
        DIB_IMAGEKIT_APT_SECURITY=$IMAGEKIT_BUILD_APT_SECURITY \
        "$finish/finalise.d/90-imagekit-apt-sources"
fi
apt-get update
# shellcheck disable=SC2086 # a list of package names
apt-get install -y --no-install-recommends ${IMAGEKIT_PACKAGES}

if [ -d "$element/static" ]; then
    cp -r --no-preserve=ownership "$element/static/." /
fi
for phase in install.d post-install.d; do
    [ -d "$element/$phase" ] || continue
    for script in $(ls "$element/$phase" | sort); do
        "$element/$phase/$script"
    done
done

# Only the baked keys stay: cloud-init added this build's key at boot.
home=$(getent passwd "$DIB_IMAGEKIT_ADMIN_USER" | cut -d: -f6)
sed -i '/imagekit-packer-build/d' "$home/.ssh/authorized_keys"
rm -f "$home/.bash_history"

# What DIB builds record in finalise.d/85, before the apt lists go.
"$finish/bin/imagekit-package-list" > /tmp/imagekit-packages.tsv

rm -f "$proxy_conf"
"$finish/finalise.d/90-imagekit-apt-sources"
"$finish/finalise.d/95-imagekit-cleanup"
# What DIB builds end with (sysprep, then imagekit-finish's finalise.d/99).
"$finish/finalise.d/99-imagekit-machine-id"
cloud-init clean --logs
# Tell the (discard-enabled) disk which blocks are free, so the image stays small.
sync
fstrim -av || true
