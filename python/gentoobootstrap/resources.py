"""Release a resource whatever happens: on success, on an error and on a signal.

A failing release must not hide the error that made us unwind, nor stop the
releases after it (an ExitStack runs them all); after a success it is the error.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Callable

from gentoobootstrap.errors import Interrupted

log = logging.getLogger(__name__)


def release(what: str, action: Callable[[], object], failing: bool) -> None:
    """Run a release ``action``; when the body already failed, log its failure, do not raise."""
    try:
        action()
    except Interrupted:
        # The signal cut the release short; signals are ignored from now on, so finish it.
        log.warning("interrupted while releasing %s; finishing that first", what)
        release(what, action, failing=True)
        raise
    except Exception as e:
        if not failing:
            raise
        log.error("could not release %s: %s", what, e)


@contextlib.contextmanager
def releasing(what: str, action: Callable[[], object]) -> Iterator[None]:
    """Run the body, then ``action`` releases ``what`` (see :func:`release`).

    Entered on an ExitStack, it learns of the error the stack unwinds for, too.
    """
    failing = False
    try:
        yield
    except BaseException:
        failing = True
        raise
    finally:
        release(what, action, failing)
