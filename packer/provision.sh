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

# What this VM's own run leaves goes at its shutdown (Packer's shutdown_command,
# or Nova's stop), once the services that write it as they stop have stopped:
# the RNG seed, the DHCP lease, wtmp, the journal (moved to /run first). The
# unit and its script live in /run (noexec: bash reads the script), so neither
# is in the image.
install -m 0644 "$finish/bin/imagekit-sysprep" /run/imagekit-sysprep
cat > /run/systemd/system/imagekit-sysprep.service <<'UNIT'
[Unit]
Description=Remove what the imagekit build VM's run left
DefaultDependencies=no
After=local-fs.target
Before=shutdown.target systemd-random-seed.service systemd-update-utmp.service
Before=systemd-journal-flush.service networking.service ssh.service
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
ExecStop=/bin/journalctl --relinquish-var
ExecStop=/bin/bash /run/imagekit-sysprep
# Tell the (discard-enabled) disk which blocks are free, the removed ones too, so
# the image stays small and carries none of their data.
ExecStop=-/sbin/fstrim -av
UNIT
systemctl daemon-reload
systemctl start imagekit-sysprep.service
