"""Loading an app for ``mesh run``, ``mesh docs`` and ``mesh contracts``: one way to
name it (``module:attr`` or ``path/app.py[:attr]``) and one way for the command line's
--transport/--config to reach the Mesh it builds at import time."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from mesh.app import Mesh
from mesh.cli.app import Common, UsageError
from mesh.cli.output import error
from mesh.config import MeshConfig
from mesh.errors import MeshError


def split_target(target: str) -> tuple[str, str]:
    """``module:attr`` / ``path/app.py[:attr]`` -> (module or path, attr). attr defaults
    to ``mesh``. Only a trailing ``:dotted.name`` counts as attr, so ``C:\\app.py``
    stays a path."""
    head, sep, tail = target.rpartition(":")
    if sep and tail and all(part.isidentifier() for part in tail.split(".")) and head:
        return head, tail
    if sep and not tail:
        raise UsageError(
            f"app {target!r} ends with ':'; write module:attr (e.g. app:mesh) "
            "or leave the attribute out to use 'mesh'"
        )
    return target, "mesh"


def _is_path(spec: str) -> bool:
    return spec.endswith(".py") or "/" in spec or os.sep in spec


def import_target(spec: str) -> ModuleType:
    """Import a module by dotted name (from the current directory, like ``python -m``)
    or execute a ``.py`` file as a module (its directory first on ``sys.path``, like
    ``python app.py``, so the app's sibling modules import)."""
    if _is_path(spec):
        path = Path(spec)
        if not path.is_file():
            raise UsageError(
                f"app file {spec} does not exist; pass an existing .py file "
                "or a module name (mesh run package.module:mesh)"
            )
        name = (
            path.stem
            if path.stem.isidentifier() and path.stem not in sys.modules
            else f"_mesh_app_{uuid.uuid4().hex[:8]}"
        )
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise UsageError(f"cannot load {spec} as a Python module; is it a .py file?")
        module = importlib.util.module_from_spec(loader_spec)
        sys.path.insert(0, str(path.resolve().parent))
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
        return module
    if not all(part.isidentifier() for part in spec.split(".")):
        raise UsageError(
            f"{spec!r} is neither a module name nor a .py file; use "
            "package.module:attr or path/to/app.py[:attr]"
        )
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(spec)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (spec == exc.name or spec.startswith(exc.name + ".")):
            raise UsageError(
                f"cannot import app module {spec!r} (no module named {exc.name!r}); run mesh "
                "from the directory that contains it, add that directory to PYTHONPATH, or "
                "pass the file: mesh run path/to/app.py"
            ) from None
        raise


def load_app(target: str) -> Mesh:
    """Import ``target`` and return its `Mesh`; `UsageError` says what to pass instead."""
    spec, attr = split_target(target)
    module = import_target(spec)
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            found = [name for name, value in vars(module).items() if isinstance(value, Mesh)]
            hint = (
                f"Mesh objects in it: {', '.join(found)}; use {spec}:{found[0]}"
                if found
                else "it defines no Mesh at module level; create one there, e.g. mesh = Mesh()"
            )
            raise UsageError(f"{spec} has no attribute {attr!r}; {hint}") from None
    if not isinstance(obj, Mesh):
        raise UsageError(
            f"{spec}:{attr} is a {type(obj).__name__}, not a mesh.Mesh; point "
            "mesh run at the Mesh instance your handlers are registered on"
        )
    return obj


def import_app(target: str) -> Mesh | None:
    """`load_app` for a command: None (after printing the traceback) when the app's own
    code failed at import, so the command exits 1 rather than showing a CLI crash."""
    try:
        return load_app(target)
    except (UsageError, MeshError):
        raise
    except Exception:
        traceback.print_exc()
        error(f"importing {target} failed (traceback above)")
        return None


def prepare_environment(options: Common) -> MeshConfig:
    """Export --config/--transport as ``MESH_CONFIG``/``MESH_TRANSPORT`` before the app is
    imported (its Mesh is usually built at import time and reads them), and return the
    configuration the app's Mesh must end up with."""
    expected = options.load_config()
    if options.config:
        os.environ["MESH_CONFIG"] = str(Path(options.config).resolve())
    if options.transport:
        os.environ["MESH_TRANSPORT"] = options.transport
    return expected
