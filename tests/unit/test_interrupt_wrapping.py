"""A Ctrl-C or SIGTERM that lands while Python 3.11 makes a class (a dataclass field's
``__set_name__``, during a lazy import) comes out as a RuntimeError wrapping the
KeyboardInterrupt: both entry points still see an interrupt in it (exit 130, one line).
The fresh-clone CI hit it: ``test_a_signal_during_start_up_gives_130_and_one_line``."""

from __future__ import annotations

import pytest

from sbbackup.errors import from_interrupt


class Interrupting:
    def __set_name__(self, owner: type, name: str) -> None:
        raise KeyboardInterrupt


def made_while_interrupted() -> BaseException:
    try:

        class Victim:  # noqa: F841 - made only to be interrupted
            field = Interrupting()

    except BaseException as exc:  # noqa: BLE001 - what the interpreter makes of it
        return exc
    pytest.fail("the class was made")


def test_a_wrapped_interrupt_is_an_interrupt() -> None:
    exc = made_while_interrupted()
    assert isinstance(exc, (KeyboardInterrupt, RuntimeError))  # 3.11 wraps, 3.12 need not
    assert from_interrupt(exc)


def test_other_errors_are_not() -> None:
    try:
        raise RuntimeError("boom") from ValueError("cause")
    except RuntimeError as exc:
        assert not from_interrupt(exc)
