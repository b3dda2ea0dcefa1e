"""The whole site from the golden images: its description, networks and test."""
