"""Image builders: each turns a role into a qcow2 plus manifest in the build layout."""
