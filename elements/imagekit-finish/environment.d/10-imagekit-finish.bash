# Defaults for a plain disk-image-create run too; imagekit sets the same
# variables from imagekit.yaml.
# The image's apt sources after the build (not the build mirrors).
export DIB_IMAGEKIT_APT_MAIN=${DIB_IMAGEKIT_APT_MAIN:-http://deb.debian.org/debian}
export DIB_IMAGEKIT_APT_SECURITY=${DIB_IMAGEKIT_APT_SECURITY:-http://security.debian.org/debian-security}
# No boot menu to wait for: a cloud console is read, not typed into.
export DIB_GRUB_TIMEOUT=${DIB_GRUB_TIMEOUT:-0}
