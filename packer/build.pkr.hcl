build {
  sources = ["source.qemu.role", "source.openstack.role"]

  # The role's DIB element and imagekit-finish (apt sources, clean-up): the same files
  # `disk-image-create` uses, run by provision.sh.
  provisioner "file" {
    source      = "${var.elements_dir}/imagekit-${var.role}"
    destination = "/tmp/imagekit-element"
  }

  provisioner "file" {
    source      = "${var.elements_dir}/imagekit-finish"
    destination = "/tmp/imagekit-finish"
  }

  provisioner "file" {
    source      = "${path.root}/provision.sh"
    destination = "/tmp/imagekit-provision.sh"
  }

  provisioner "shell" {
    inline = [
      "sudo env IMAGEKIT_PACKAGES='${join(" ", var.packages)}' DIB_IMAGEKIT_ADMIN_USER='${var.admin_user}' IMAGEKIT_BUILD_APT_MAIN='${var.build_apt_main}' IMAGEKIT_BUILD_APT_SECURITY='${var.build_apt_security}' IMAGEKIT_APT_PROXY='${var.apt_proxy}' DIB_IMAGEKIT_APT_MAIN='${var.image_apt_main}' DIB_IMAGEKIT_APT_SECURITY='${var.image_apt_security}' bash /tmp/imagekit-provision.sh",
    ]
  }

  provisioner "file" {
    direction   = "download"
    source      = "/tmp/imagekit-packages.tsv"
    destination = var.packages_file
  }

  provisioner "shell" {
    inline = ["sudo rm -rf /tmp/imagekit-element /tmp/imagekit-finish /tmp/imagekit-provision.sh /tmp/imagekit-packages.tsv"]
  }
}
