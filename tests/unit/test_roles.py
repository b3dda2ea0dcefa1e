"""The role registry: every role has everything the stages read, in one place."""

from collections.abc import Callable
from pathlib import Path

import pytest

from imagekit.config import load_config
from imagekit.errors import UserError
from imagekit.roles import (
    ELEMENTS_DIR,
    REGISTRY,
    ROLES,
    Role,
    cloud_init_datasources,
    element_default,
    get_role,
)
from imagekit.userdata.values import ROLE_VALUES

WriteConfig = Callable[[str], Path]


@pytest.mark.parametrize("role", REGISTRY, ids=ROLES)
def test_each_role_has_an_element_suite_template_example_and_variables(role: Role) -> None:
    assert get_role(role.name) is role
    assert (ELEMENTS_DIR / role.element).is_dir()
    assert role.suite.is_file() and role.template.is_file() and role.example_values.is_file()
    assert role.name in ROLE_VALUES


def test_the_registry_is_the_only_list_of_roles() -> None:
    assert tuple(ROLE_VALUES) == ROLES
    with pytest.raises(UserError, match="unknown role 'mail'"):
        get_role("mail")


def test_config_role_settings_only_for_known_roles(write_config: WriteConfig) -> None:
    with pytest.raises(UserError, match="unknown role 'mail'"):
        load_config(write_config("ssh_keys: [{key}]\nroles: {mail: {packages: [curl]}}\n"))
    config = load_config(write_config("ssh_keys: [{key}]\nroles: {web: {packages: [curl]}}\n"))
    assert "curl" in config.role_packages("web")


def test_build_defaults_are_read_from_the_base_element(monkeypatch: pytest.MonkeyPatch) -> None:
    """imagekit-base's environment.d is the one place a default is written."""
    assert element_default("DIB_IMAGEKIT_ADMIN_USER") == "admin"
    assert element_default("DIB_IMAGEKIT_AUTHORIZED_KEYS") == ""
    with pytest.raises(LookupError, match="no default for DIB_NO_SUCH"):
        element_default("DIB_NO_SUCH")
    monkeypatch.delenv("DIB_CLOUD_INIT_DATASOURCES", raising=False)
    assert cloud_init_datasources() == ["NoCloud", "ConfigDrive", "OpenStack"]
    # As DIB reads it: the builder's environment first.
    monkeypatch.setenv("DIB_CLOUD_INIT_DATASOURCES", "ConfigDrive, OpenStack")
    assert cloud_init_datasources() == ["ConfigDrive", "OpenStack"]
