"""What the command modules use, imported on first use rather than at start-up.

``sbbackup --help`` (and a command refused before it runs) needs neither the use cases nor
the renderer: ``sbbackup.ops`` loads the engines' base, the pipeline, the state directory and
zstandard; ``sbbackup.render`` loads every result type; rich loads itself. Each name here is
a stand-in that imports the real object the first time it is called or an attribute of it is
read. Type checkers see the real objects: the command modules import them under
``TYPE_CHECKING`` and these stand-ins otherwise.
"""

from __future__ import annotations

import importlib
from typing import Any


class Lazy:
    """Stands in for module ``module`` (or its attribute ``attr``) until first used."""

    def __init__(self, module: str, attr: str | None = None) -> None:
        self._where = (module, attr)
        self._target: Any = None

    def _load(self) -> Any:
        if self._target is None:
            module, attr = self._where
            target = importlib.import_module(module)
            self._target = target if attr is None else getattr(target, attr)
        return self._target

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_where", "_target"):  # copy, pickle, __init__
            raise AttributeError(name)
        return getattr(self._load(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._load()(*args, **kwargs)

    def __repr__(self) -> str:
        module, attr = self._where
        return f"<lazy {module}{'' if attr is None else '.' + attr}>"


ops = Lazy("sbbackup.ops")
render = Lazy("sbbackup.render", "render")
render_error = Lazy("sbbackup.render", "render_error")
RunOutcome = Lazy("sbbackup.results", "RunOutcome")
Text = Lazy("rich.text", "Text")
