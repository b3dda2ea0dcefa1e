"""Publishing tested builds to Glance: upload, verify, share, rotate."""
