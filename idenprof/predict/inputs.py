"""What infer.py is asked to predict: files, folders, globs and URLs, as one list of image paths."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from idenprof.data.imaging import is_listed_image

GLOB_CHARS = "*?["


@dataclass(frozen=True)
class InputError:
    """An input that could not be predicted: `message` names the file and the problem."""

    path: str
    message: str


def expand_inputs(args: list[str], recursive: bool = False) -> tuple[list[str], list[InputError]]:
    """Image paths (and URLs) from command-line arguments, in argument order, each file once (the
    first path naming it, symlinks resolved).

    - an http(s) URL: kept as given (fetched when predicted, see idenprof.predict.remote);
    - an existing file: used as given (whatever its extension; decoding decides);
    - a folder: its image files (by extension), sorted; with `recursive`, those of its subfolders
      too (folders of folders, such as a dataset split);
    - a glob pattern (*, ?, [...]; ** recurses): the matching image files, sorted.
    A missing file, a folder without images, and a pattern matching no image are errors.
    """
    from idenprof.predict.remote import is_url

    paths: list[str] = []
    errors: list[InputError] = []
    for arg in args:
        if is_url(arg):
            found = [arg]
        elif os.path.isfile(arg):
            found = [arg]
        elif os.path.isdir(arg):
            candidates = Path(arg).rglob("*") if recursive else Path(arg).iterdir()
            found = sorted(str(p) for p in candidates if is_listed_image(p))
            if not found:
                errors.append(InputError(arg, f"{arg}: folder has no image files"))
        elif any(c in arg for c in GLOB_CHARS):
            found = sorted(p for p in glob.glob(arg, recursive=True) if is_listed_image(Path(p)))
            if not found:
                errors.append(InputError(arg, f"{arg}: pattern matches no image files"))
        else:
            found = []
            errors.append(InputError(arg, f"{arg}: no such file or folder"))
        paths.extend(found)
    # Once per file, not per spelling: `**` through a symlink loop reaches a file by many paths.
    unique: dict[str, str] = {}
    for path in paths:
        unique.setdefault(path if is_url(path) else os.path.realpath(path), path)
    return list(unique.values()), errors
