"""Render a role's cloud-init user data and check it before anyone boots with it."""

from pathlib import Path
from typing import Any

import jinja2
import yaml
from pydantic import SecretStr

from imagekit.errors import UserError
from imagekit.roles import TEMPLATES_DIR, get_role
from imagekit.userdata.schema import validate_cloud_config
from imagekit.userdata.values import Common

TEMPLATES = TEMPLATES_DIR
HEADER = "#cloud-config\n"

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # YAML, not HTML
)


def template_context(values: Common) -> dict[str, Any]:
    """The values as templates see them: secrets revealed, properties included."""
    context: dict[str, Any] = {}
    for name, value in values:
        context[name] = value.get_secret_value() if isinstance(value, SecretStr) else value
    for cls in type(values).__mro__:
        if issubclass(cls, Common):
            for name, attr in vars(cls).items():
                if isinstance(attr, property):
                    context[name] = getattr(values, name)
    return context


def _render(template: str, context: dict[str, Any]) -> dict[str, Any]:
    try:
        text = _env.get_template(template).render(context)
    except jinja2.UndefinedError as err:
        raise UserError(f"{TEMPLATES / template}: undefined variable: {err.message}") from None
    except jinja2.TemplateError as err:
        raise UserError(f"{TEMPLATES / template}: template error: {err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(f"{TEMPLATES / template}: renders invalid YAML: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"{TEMPLATES / template}: does not render a mapping")
    return data


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Shared part first: lists are concatenated, mappings merged, scalars overridden."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, list) and isinstance(merged.get(key), list):
            merged[key] = merged[key] + value
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (file contents) as readable `|` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def render_user_data(role: str, values: Common, cache_dir: Path) -> str:
    """The #cloud-config document for one instance, validated against cloud-init's schema."""
    context = template_context(values)
    document = merge(
        _render("common.yaml.j2", context), _render(get_role(role).template.name, context)
    )
    text = HEADER + yaml.dump(document, Dumper=_BlockDumper, sort_keys=False, width=1000)
    validate_cloud_config(text, cache_dir)
    return text
