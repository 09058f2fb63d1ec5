"""predict's video options: refused where they do not apply, before any work (one line)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import call_stage, error_line

pytestmark = pytest.mark.slow  # stages in subprocesses or trained workspaces


def test_video_options_are_for_a_video_input(tmp_path: Path) -> None:
    for args, message in [
        (["m.pt", "clip.npz", "--render", "x.mp4"], "--render: only for a video INPUT"),
        (["m.pt", "data.pkl", "--stride", "2"], "--stride: only for a video INPUT"),
        (["m.pt", "v.mp4", "--render", "x.png"], "--render: expected a file name ending in"),
        (["m.pt", "v.mp4", "--stride", "0"], "--stride: expected an integer >= 1"),
        (["m.pt", "v.mp4", "--persons", "0"], "--persons: expected an integer >= 1"),
    ]:
        line = error_line(call_stage("predict", tmp_path, *args))
        assert line.startswith("error: usage: ") and message in line, line
    assert list(tmp_path.iterdir()) == []
