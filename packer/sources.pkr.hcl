source "qemu" "role" {
  disk_image       = true
  iso_url          = var.base_image
  iso_checksum     = "none"
  format           = "qcow2"
  skip_resize_disk = true
  # Freed blocks become holes (fstrim in provision.sh); imagekit then makes the compressed
  # copy itself, with the configured compression (image_compression), as DIB does.
  disk_discard       = "unmap"
  disk_detect_zeroes = "unmap"
  skip_compaction    = true
  accelerator        = var.accelerator
  headless           = true
  memory             = var.memory
  cpus               = var.cpus
  disk_interface     = "virtio"
  net_device         = "virtio-net"
  cd_files           = ["${var.seed_dir}/user-data", "${var.seed_dir}/meta-data"]
  cd_label           = "cidata"
  output_directory   = var.output_directory
  vm_name            = "${var.role}.qcow2"

  communicator         = "ssh"
  ssh_username         = var.admin_user
  ssh_private_key_file = var.ssh_private_key_file
  ssh_timeout          = "20m"
  shutdown_command     = "sudo shutdown -P now"

  # The SSH forward on 127.0.0.1 only (Packer's default listens on all interfaces).
  qemuargs = [
    ["-netdev", "user,id=user.0,hostfwd=tcp:127.0.0.1:{{ .SSHHostPort }}-:22"],
    ["-device", "virtio-net,netdev=user.0"],
  ]
}

# The cloud is the clouds.yaml entry that imagekit names in OS_CLOUD (with
# OS_CLIENT_CONFIG_FILE): Packer reads credentials, CA and region from it itself.
source "openstack" "role" {
  source_image        = var.source_image
  source_image_name   = var.source_image_name
  flavor              = var.flavor
  networks            = var.networks
  floating_ip_network = var.floating_ip_network
  floating_ip         = var.floating_ip
  security_groups     = var.security_groups
  image_name          = var.image_name
  image_visibility    = var.image_visibility
  image_members       = var.image_members
  image_tags          = var.image_tags
  metadata            = var.metadata
  instance_name       = var.instance_name
  instance_metadata   = var.instance_metadata
  user_data_file      = var.user_data_file
  # Keys and user data reach cloud-init on a config drive (the images keep ConfigDrive).
  config_drive = true

  communicator         = "ssh"
  ssh_username         = var.admin_user
  ssh_private_key_file = var.ssh_private_key_file
  ssh_ip_version       = "4"
  ssh_timeout          = "20m"
  ssh_proxy_host       = var.ssh_proxy_host
  ssh_proxy_port       = var.ssh_proxy_port
}
