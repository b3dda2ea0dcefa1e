"""Role suites run by `imagekit test` inside a throwaway instance (testinfra `host`).

imagekit passes what the image must contain (from the config) in a JSON file
named by IMAGEKIT_SUITE_CONTEXT, and the instance's SSH address in
IMAGEKIT_SUITE_SSH ("host:port").
"""

import json
import os
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def expected() -> dict[str, Any]:
    path = os.environ.get("IMAGEKIT_SUITE_CONTEXT")
    if not path:
        pytest.fail("these suites run through 'imagekit test ROLE' (IMAGEKIT_SUITE_CONTEXT unset)")
    context: dict[str, Any] = json.loads(Path(path).read_text())
    return context
