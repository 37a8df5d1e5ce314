"""botocore's data files (service models, endpoint rules) read with orjson.

A client's set-up reads some 2.5 MB of JSON (the S3 model, its endpoint rules, and the
1.2 MB legacy ``endpoints.json``). botocore parses it with ``json`` into ``OrderedDict``s, a
visible part of start-up; orjson takes a fraction of that (design-figures-2026-12-03.md in
benchmarks/results), and its plain dicts keep the same order. botocore asks its session for a
``data_loader`` component: this one reads files the same way (same search paths, same ``.json``
/ ``.json.gz`` forms) and differs only in the parser.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
from botocore.loaders import JSONFileLoader, Loader, create_loader


class _OrjsonFileLoader(JSONFileLoader):  # type: ignore[misc]
    def _load_file(self, full_path: str, open_method: Any) -> Any:
        if not os.path.isfile(full_path):
            return None
        with open_method(full_path, "rb") as file:
            return orjson.loads(file.read())


def use_fast_data_loader(session: Any) -> None:
    """Make ``session`` (a botocore or aiobotocore session) read its data files with orjson.

    Registered lazily, as botocore registers its own: the ``data_path`` setting is read when the
    loader is first needed, from the profile in force then.
    """

    def make() -> Loader:
        loader: Loader = create_loader(session.get_config_variable("data_path"))
        loader.file_loader = _OrjsonFileLoader()
        return loader

    session.lazy_register_component("data_loader", make)
