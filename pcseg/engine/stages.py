"""Resumable stages of a multi-stage protocol (pre-train → export, select → label → train per round).

A :class:`Stage` is a named step with a settings manifest and a folder holding what it writes. Its
state lives in one file, ``<folder>/<name>.stage.json``::

    {"stage": "train", "settings": {…}, "done": false}    # written (atomically) when the stage starts
    {"stage": "train", "settings": {…}, "done": true}     # rewritten (atomically) when its body returned

:meth:`Stage.run` then follows one rule:

- no file: the stage is new; the manifest is written, the body runs, the stage is marked done;
- a file whose settings differ from the stage's: refused with :class:`StageSettingsError` listing
  the differing dotted keys (old -> new), whether the stage finished or not; nothing is written;
- done with the same settings: reused, the body does not run;
- not done with the same settings (interrupted): the body runs again on the folder as it was left
  and continues from what it finds there (a trainer resumes from its ``model_last.pth``).

Settings are plain JSON data (mappings, lists, str, numbers, bool, None); they are compared after
a JSON round trip, so tuples and lists are the same setting. Several stages may share a folder
(distinct names). In a multi-process run only the main process writes stage files (``write``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from pcseg.utils.atomic import atomic_path
from pcseg.utils.errors import InputError

from .config import config_diff

__all__ = ["Stage", "StageSettingsError", "MANIFEST_SUFFIX"]

MANIFEST_SUFFIX = ".stage.json"


class StageSettingsError(InputError):
    """A stage folder started or finished with other settings; the message lists the differences."""


def _plain(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` as JSON reads it back (tuples → lists); TypeError for values JSON cannot hold."""
    return json.loads(json.dumps(dict(settings)))


@dataclass(frozen=True)
class Stage:
    """One step of a protocol: ``name`` (unique within ``folder``), its ``settings`` and its ``folder``."""

    name: str
    folder: Path
    settings: Mapping[str, Any]

    @property
    def manifest(self) -> Path:
        """``<folder>/<name>.stage.json``."""
        return Path(self.folder) / f"{self.name}{MANIFEST_SUFFIX}"

    def state(self) -> Literal["new", "interrupted", "done"]:
        """Where the stage stands on disk; raises :class:`StageSettingsError` if its settings differ."""
        if not self.manifest.is_file():
            return "new"
        try:
            saved = json.loads(self.manifest.read_text(encoding="utf-8"))
            old, done = saved["settings"], saved["done"]
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(f"{self.manifest}: expected a stage manifest with 'settings' and 'done', "
                             f"got unreadable content ({err})") from None
        changed = config_diff(old, _plain(self.settings))
        if changed:
            listing = "; ".join(f"{key}: {a!r} -> {b!r}" for key, (a, b) in changed.items())
            raise StageSettingsError(f"{self.manifest}: stage {self.name!r} {'finished' if done else 'started'} "
                                     f"with other settings ({listing}); restore them or use another work directory")
        return "done" if done else "interrupted"

    def _write(self, done: bool) -> None:
        with atomic_path(self.manifest) as tmp:
            tmp.write_text(json.dumps({"stage": self.name, "settings": _plain(self.settings), "done": done},
                                      indent=1), encoding="utf-8")

    def run(self, body: Callable[[Path], None], write: bool = True) -> bool:
        """Run ``body(folder)`` unless the stage is done (see the module docstring); True if it ran.

        write: False in the processes of a multi-process run other than the main one (they run the
        body, e.g. their share of a distributed training, but leave the stage files to the main one).
        """
        state = self.state()
        if state == "done":
            return False
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        if write and state == "new":
            self._write(done=False)
        body(Path(self.folder))
        if write:
            self._write(done=True)
        return True
