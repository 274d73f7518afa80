"""A real terminal for the tests: one tmux server of our own running one command, keys in, screen out."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from tuihelp import ROOT

TMUX = shutil.which("tmux")


class Terminal:
    """One tmux server of our own (its own socket) running one command at 120x40."""

    def __init__(self, command: str) -> None:
        self.socket = f"pcapdns-test-{os.getpid()}"
        self.tmux([
            "new-session", "-d", "-s", "tui", "-x", "120", "-y", "40",
            f"cd {ROOT} && unset COLUMNS LINES && {command}; sleep 5",
        ])  # fmt: skip

    def tmux(self, args: list[str]) -> str:
        assert TMUX is not None
        # COLUMNS/LINES (set under pytest) would pin the app's idea of the terminal size
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        proc = subprocess.run(
            [TMUX, "-L", self.socket, *args], capture_output=True, text=True, timeout=20, env=env
        )
        return proc.stdout

    def screen(self) -> str:
        return self.tmux(["capture-pane", "-p", "-t", "tui"])

    def keys(self, *keys: str) -> None:
        for key in keys:
            self.tmux(["send-keys", "-t", "tui", key])
            time.sleep(0.15)  # a person's pace: focus changes land before the next key

    def wait_for(self, *texts: str, timeout: float = 30.0) -> str:
        """The screen once it shows every one of ``texts`` (the app may still be resizing)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            screen = self.screen()
            if all(t in screen for t in texts):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{texts!r} never all appeared; the screen shows:\n{self.screen()}")

    def close(self) -> None:
        subprocess.run([TMUX or "tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=20)
