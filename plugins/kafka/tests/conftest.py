"""Unit tests of the kafka plugin, collected by the repository's test command (pyproject
``testpaths``). They need the plugin installed (``pip install ./plugins/kafka``); in a
checkout without it they are left out, so the core's tests run alone, except under
``CI=true``, where a missing plugin fails the run."""

import importlib.util
import os

_MISSING = importlib.util.find_spec("mesh_kafka") is None
_CI = os.environ.get("CI", "").lower() == "true"
collect_ignore_glob = ["test_*.py"] if _MISSING and not _CI else []
