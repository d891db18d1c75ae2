"""The library's terminal formatting, used without the command line."""

from __future__ import annotations

import io

from spela_stream.display import Progress, plural, table


def test_progress_logs_library_messages_as_written_unless_told_to_rewrite() -> None:
    err = io.StringIO()
    Progress(err=err, live=False).log("pass `n_features`")
    Progress(err=err, live=False, rewrite=str.upper).log("drift")
    assert err.getvalue() == "pass `n_features`\nDRIFT\n"


def test_quiet_progress_says_nothing() -> None:
    err = io.StringIO()
    Progress(err=err, quiet=True).log("news")
    assert err.getvalue() == ""


def test_table_and_plural() -> None:
    assert table([[1, "a"], [10, "bb"]], ["n", "s"]).splitlines() == [
        " n  s", "--  --", " 1  a", "10  bb",
    ]  # fmt: skip
    assert plural(1, "sample") == "1 sample" and plural(3, "sample") == "3 samples"
