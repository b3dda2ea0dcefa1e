"""What a benchmark measured, as JSON: `bench/all.py` collects every script's figures.

A script calls `record(name, figures)` once, after printing its table. Run alone it
writes nothing; under `bench/all.py` (which sets IMAGEKIT_BENCH_JSON) its figures
join the run's JSON file, so that runs can be compared later.
"""

import json
import os
from pathlib import Path
from typing import Any

ENV = "IMAGEKIT_BENCH_JSON"


def record(bench: str, figures: dict[str, Any]) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    file = Path(path)
    data = json.loads(file.read_text()) if file.exists() else {}
    data.setdefault("benchmarks", {})[bench] = figures
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(file)
