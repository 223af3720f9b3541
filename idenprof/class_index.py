"""The class index: JSON mapping output position to class name, in the original IdenProf format.

    {"0": "chef", "1": "doctor", ...}

Indices follow sorted folder-name order, as Keras' flow_from_directory assigns them. The file
travels with every trained model (the one source of truth for class names).
"""

from __future__ import annotations

import json
from pathlib import Path

from idenprof.errors import ModelFileError
from idenprof.files import write_json_atomically
from idenprof.run_folder import CLASS_INDEX_FILENAME


def write_class_index(class_names: list[str], path: Path) -> Path:
    """Write `class_names` (position = model output index) atomically to `path`."""
    path = Path(path)
    return write_json_atomically({str(i): name for i, name in enumerate(class_names)}, path)


def read_class_index(path: Path) -> list[str]:
    """Read a class index JSON; returns the class names in output order.

    Raises ModelFileError when the file is missing, not JSON, its keys are not 0..N-1, or a name
    repeats.
    """
    path = Path(path)
    try:
        mapping = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFileError(
            f"class index {path} not found; it is saved next to every trained model "
            f"as {CLASS_INDEX_FILENAME} (pass --labels to point at it)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"class index {path} is not valid JSON ({e})") from None
    if not isinstance(mapping, dict) or not mapping:
        raise ModelFileError(f"class index {path} must be a JSON object like {{\"0\": \"chef\"}}")
    try:
        keys = sorted(int(k) for k in mapping)
    except ValueError:
        raise ModelFileError(f"class index {path} has non-integer keys") from None
    if keys != list(range(len(keys))):
        raise ModelFileError(f"class index {path} must have keys 0..{len(keys) - 1} with no gaps")
    names = [str(mapping[str(i)]) for i in keys]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ModelFileError(f"class index {path} names {', '.join(repeated)} more than once; each class once")
    return names
