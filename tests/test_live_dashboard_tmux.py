"""The real ``pcapdns live -i lo`` dashboard in a real terminal (tmux), watching a real unbound on
loopback: the panels fill in with what dig asked, and ``q`` ends with the final summary."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from liveenv import dig, needs, unbound
from tmuxterm import TMUX, Terminal


@needs("unbound", "dig", "tmux")
def test_the_live_dashboard_on_loopback(tmp_path: Path) -> None:
    assert TMUX is not None
    with unbound(tmp_path) as port:
        live = f"{sys.executable} -m pcapdns live -i lo -f 'udp port {port}' --port {port} --timeout 1"
        term = Terminal(f"{live}; echo exit=$?")
        try:
            term.wait_for("pcapdns live on lo", "dropped: kernel 0", "queue 0", timeout=40)
            for _ in range(3):
                assert dig(port, "ok.test")["status"] == "NOERROR"
                assert dig(port, "missing.test")["status"] == "NXDOMAIN"
                assert dig(port, "fail.example", wait_s=3).get("status") == "SERVFAIL"
                assert dig(port, "ok.test", source="127.0.0.2")["status"] == "REFUSED"
            screen = term.wait_for("fail.example", "missing.test", "REFUSED", "127.0.0.1", timeout=30)
            assert "Responses per second by RCODE" in screen and "Findings" in screen
            counts = re.search(r"packets ([\d,]+)\s+DNS messages ([\d,]+)", screen)
            assert counts and int(counts.group(1).replace(",", "")) >= 24  # 12 queries, 12 answers at least
            term.keys("q")
            # the screen is given back and the final summary printed (its tail fits the pane)
            final = term.wait_for("exit=0", '"final": true', timeout=30)
            assert re.search(r'"dropped": \{\s+"kernel": 0,\s+"queue": 0', final)
            assert "Responses per second" not in final
        finally:
            term.close()
            time.sleep(0.1)
