"""Plain-file storage shared by the stage results (JSON; arrays as ``.npy`` without pickle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, default=str))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
