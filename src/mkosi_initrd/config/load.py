"""The Config of a build: the root's ini files (ini.py), then the command line's values.

Command-line lists add to the files' lists; command-line scalars override them; what neither says
is the table's default (settings.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mkosi_initrd.config.ini import config_files, read_files
from mkosi_initrd.config.model import Config
from mkosi_initrd.config.settings import Values, settings_of
from mkosi_initrd.errors import InitrdError


def load_config(root: Path, kver: str, cli: Values | None = None) -> Config:
    """The root's config files, then the command line (`cli`: the values cli.py parsed, if any)."""
    if not root.is_dir():
        raise InitrdError(f"root {root} does not exist or is not a directory")
    cli = cli or Values()
    files = config_files(root)
    from_files = read_files(files)
    # Each setting's parser gives its field's type (tests/test_settings.py checks): the fields go to
    # Config by name, as the table names them.
    fields: dict[str, Any] = {}
    for s in settings_of("config"):
        in_file, given = from_files.get(s.name), cli.get(s.name)
        if s.kind == "words":
            items = [*(in_file if isinstance(in_file, list) else ()), *cli.words(s.name)]
            fields[s.name] = tuple(items) if s.repeats else tuple(dict.fromkeys(items))
        else:
            fields[s.name] = given if given is not None else in_file if in_file is not None else s.default
    sde = os.environ.get("SOURCE_DATE_EPOCH", "")
    return Config(
        root=root,
        kver=kver,
        added_packages=tuple(dict.fromkeys(cli.words("packages"))),
        source_date_epoch=int(sde) if sde.isdigit() else 0,
        config_files=tuple(files),
        **fields,
    )
