"""`imagekit userdata`: per-instance cloud-init user data from the role templates."""

from imagekit.userdata.render import render_user_data
from imagekit.userdata.values import ROLE_VALUES, example_values, load_values

__all__ = ["ROLE_VALUES", "example_values", "load_values", "render_user_data"]
