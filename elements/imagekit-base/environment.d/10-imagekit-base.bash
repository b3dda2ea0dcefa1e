# Defaults for a plain disk-image-create run too; imagekit sets the same
# variables from imagekit.yaml.
export DIB_CLOUD_INIT_DATASOURCES=${DIB_CLOUD_INIT_DATASOURCES:-"NoCloud, ConfigDrive, OpenStack"}
# cloud-init writes the network config at first boot, not DIB.
export DIB_APT_MINIMAL_CREATE_INTERFACES=${DIB_APT_MINIMAL_CREATE_INTERFACES:-0}
export DIB_IMAGEKIT_ADMIN_USER=${DIB_IMAGEKIT_ADMIN_USER:-admin}
export DIB_IMAGEKIT_AUTHORIZED_KEYS=${DIB_IMAGEKIT_AUTHORIZED_KEYS:-}
