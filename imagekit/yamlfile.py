"""The one way imagekit reads YAML files: strict, and every problem is one line naming file:line."""

from pathlib import Path
from typing import Any

import yaml

from imagekit.errors import UserError


class _StrictLoader(yaml.SafeLoader):
    """safe_load, but a key given twice is an error instead of "the last one wins"."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *defaults" then overriding one of them is what merge keys are for
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, where: str) -> Any:
    """Parse YAML text; `where` (a file name, an option) names it in the error."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"{at}: malformed YAML: {problem}") from None


def load_yaml(path: Path, what: str) -> Any:
    """Read and parse a YAML file (`what` it is, for the error: "config", "values")."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: {what} file not found") from None
    except IsADirectoryError:
        raise UserError(f"{path}: {what} file is a directory") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read {what}: {err.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not a UTF-8 text file (byte {err.start})") from None
    if "\0" in text:
        raise UserError(f"{path}: binary file, not YAML")
    return parse_yaml(text, str(path))
