"""The real ``pcapdns tui`` command in a real terminal (tmux): keys in, screen text out."""

from __future__ import annotations

import sys
import time

import pytest
from tmuxterm import TMUX, Terminal

pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt-get install tmux)")


def test_pcapdns_tui_from_overview_to_the_packets():
    term = Terminal(f"{sys.executable} -m pcapdns tui samples/outage.pcap; echo exit=$?")
    try:
        # the overview, filled in: quality line, incidents, charts and the top-servers table
        term.wait_for("5,930 frames", "Incidents", "Queries/s", "Top servers", "10.0.0.53", "2,503")
        term.keys("3")
        term.wait_for("of 3,126")
        term.keys("/")
        time.sleep(0.5)  # the filter bar has focus before the text arrives
        term.keys("rcode=SERVFAIL ede=22", "Enter")
        screen = term.wait_for("58 of 3,126", "m.shop.example")
        assert "SERVFAIL" in screen
        term.keys("Enter")
        term.wait_for("No Reachable Authority", "RESPONSE  frame 2316", "QUERY  frame 2275")
        term.keys("x")
        term.wait_for("frame bytes")
        # Escape alone, then q once the packets are closed: an ESC with a key right behind it
        # reads as Alt+key to a terminal application
        term.keys("Escape")
        term.wait_for("58 of 3,126")
        term.keys("q")
        term.wait_for("exit=0")
    finally:
        term.close()
