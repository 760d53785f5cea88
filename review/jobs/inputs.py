"""Where the inputs named in a job's table really are, checked against the allowed roots.

An absolute path is resolved (symlinks followed) and must land on a regular file inside the
roots. A relative path (a table written by an old `vision infer` run from some working
directory) is looked for beside the job folder, then beside the folder that holds it (where
``vision infer ... --out DIR`` usually runs), and accepted only when the file found there has
the row's ``input_sha256``: a guess is never trusted on its name alone. The working directory
of the service is never a base.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from review.jobs.files import InputMissingError, InputRefusedError, is_inside, locate, open_input
from vision.hashing import stream_sha256


class InputResolver:
    """Resolves each distinct input path of a table once (see the module docstring).

    Args:
        job_dir: the job folder (resolved), base of relative paths.
        roots: the allowed roots (`review.jobs.files.service_roots`).
    """

    def __init__(self, job_dir: Path, roots: Sequence[Path]):
        self.job_dir, self.roots = job_dir, roots
        self._done: dict[tuple[str, str | None], str | tuple[type[Exception], str]] = {}

    def _key(self, raw: str, sha: str | None) -> tuple[str, str | None]:
        return (raw, None if os.path.isabs(raw) else sha)

    def resolve(self, raw: str, sha: str | None) -> str:
        """The resolved, absolute path of a row's input.

        Raises:
            InputRefusedError: outside the roots (or through a link leaving them).
            InputMissingError: missing, or (relative paths) not found with the row's hash.
        """
        k = self._key(raw, sha)
        if k not in self._done:
            try:
                self._done[k] = self._resolve(raw, sha)
            except (InputRefusedError, InputMissingError) as exc:
                self._done[k] = (type(exc), str(exc))
        got = self._done[k]
        if isinstance(got, tuple):
            raise got[0](got[1])
        return got

    def known(self, raw: str, sha: str | None) -> str | None:
        """The path `resolve` found for this input before, if it found one."""
        got = self._done.get(self._key(raw, sha))
        return got if isinstance(got, str) else None

    def _resolve(self, raw: str, sha: str | None) -> str:
        if not raw or "\x00" in raw:
            raise InputRefusedError("the input path is empty")
        if os.path.isabs(raw):
            real = os.path.realpath(raw)
            locate(real, self.roots)  # decided on the text: says nothing of outside files
            with open_input(real, self.roots):
                return real
        if not sha:
            raise InputMissingError("relative input path without input_sha256: it cannot be located")
        for base in (self.job_dir, self.job_dir.parent):
            real = os.path.realpath(base / raw)
            if not is_inside(real, self.roots):
                continue
            try:
                with open_input(real, self.roots) as f:
                    if stream_sha256(f.chunks()) == sha:
                        return real
            except (InputMissingError, InputRefusedError):
                continue
        raise InputMissingError(
            "relative input path not found beside the job folder or its parent (with the row's input_sha256)"
        )
