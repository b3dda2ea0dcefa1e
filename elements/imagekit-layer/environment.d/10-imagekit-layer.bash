# What debian-minimal tells the other elements about the root it builds; the
# layer was built by debian-minimal (see imagekit-base).
export DISTRO_NAME=debian
export DIB_RELEASE=${DIB_RELEASE:-stable}
export DIB_INIT_SYSTEM=systemd
export EFI_BOOT_DIR="EFI/debian"
