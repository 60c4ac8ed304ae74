"""The journaled write after each commit on SecantusDB uses a row of the writing process's own:
named when it is written, so processes forked after this module was imported (gunicorn's
workers, after the master imported it in `when_ready`) do not share one row."""

from __future__ import annotations

import os

from taskapi.extensions import journal_row


def test_a_process_forked_after_import_writes_its_own_journal_row():
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report its row and leave at once
        os.write(write, journal_row().encode())
        os._exit(0)
    os.close(write)
    theirs = os.read(read, 200).decode()
    os.waitpid(child, 0)
    assert theirs.endswith(f":{child}") and journal_row().endswith(f":{os.getpid()}") and theirs != journal_row()
