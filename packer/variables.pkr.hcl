# Set by `imagekit build ROLE --with packer` (a generated -var-file); see README.md.

variable "role" {
  type        = string
  description = "lb, web, dns or db: the DIB element imagekit-ROLE is provisioned"
}

variable "elements_dir" {
  type        = string
  description = "the checkout's elements/ directory (one source of truth with DIB)"
}

variable "packages" {
  type        = list(string)
  default     = []
  description = "the element's package-installs.yaml plus the config's role packages"
}

variable "admin_user" {
  type    = string
  default = "admin"
}

# Mirrors are URLs checked by imagekit (no quotes or shell characters).
variable "build_apt_main" {
  type        = string
  default     = ""
  description = "apt mirror while provisioning (empty: the source image's own sources)"
}

variable "build_apt_security" {
  type    = string
  default = ""
}

variable "apt_proxy" {
  type        = string
  default     = ""
  description = "an HTTP proxy for apt while provisioning (a cloud whose servers reach no mirror)"
}

variable "image_apt_main" {
  type        = string
  default     = "http://deb.debian.org/debian"
  description = "the image's apt sources after the build (never the build mirrors)"
}

variable "image_apt_security" {
  type    = string
  default = "http://security.debian.org/debian-security"
}

variable "ssh_private_key_file" {
  type        = string
  default     = ""
  description = "a key made for this build only"
}

# qemu source: a local qcow2 base image (imagekit's DIB base build, or any cloud image).
variable "base_image" {
  type    = string
  default = ""
}

variable "seed_dir" {
  type        = string
  default     = ""
  description = "NoCloud user-data and meta-data for the build VM"
}

variable "output_directory" {
  type    = string
  default = "output"
}

variable "packages_file" {
  type        = string
  default     = "packages.tsv"
  description = "where the image's package list is downloaded to (for the manifest)"
}

variable "accelerator" {
  type    = string
  default = "tcg"
}

variable "cpus" {
  type    = number
  default = 1
}

variable "memory" {
  type    = number
  default = 1024
}

# openstack source: an instance-based build on the cloud itself.
variable "source_image" {
  type    = string
  default = ""
}

variable "source_image_name" {
  type    = string
  default = ""
}

variable "flavor" {
  type    = string
  default = ""
}

variable "networks" {
  type    = list(string)
  default = []
}

variable "floating_ip_network" {
  type    = string
  default = ""
}

variable "floating_ip" {
  type        = string
  default     = ""
  description = "an existing floating IP's id (imagekit's, tagged with its run): used instead of one from floating_ip_network"
}

variable "security_groups" {
  type    = list(string)
  default = []
}

variable "image_name" {
  type    = string
  default = ""
}

variable "image_visibility" {
  type    = string
  default = "private"
}

variable "image_members" {
  type    = list(string)
  default = []
}

variable "image_tags" {
  type    = list(string)
  default = []
}

variable "metadata" {
  type    = map(string)
  default = {}
}

variable "user_data_file" {
  type        = string
  default     = ""
  description = "the build server's user data: the build key for the admin user"
}

variable "instance_name" {
  type    = string
  default = "imagekit-packer"
}

variable "instance_metadata" {
  type        = map(string)
  default     = {}
  description = "tags the build server with imagekit's run (found again if imagekit dies)"
}

# Servers the builder cannot route to: imagekit's SOCKS front for ssh_proxy_command.
variable "ssh_proxy_host" {
  type    = string
  default = ""
}

variable "ssh_proxy_port" {
  type    = number
  default = 1080
}
