"""Packet detail: a transaction's query and response side by side (decoded, scapy, hex)."""

from __future__ import annotations

from typing import Any

import polars as pl
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane

from pcapdns.model import DEFAULT_PORTS
from pcapdns.sources.extract import read_frames
from pcapdns.tui.messages import DetailLoaded, ScapyLoaded
from pcapdns.tui.packet import Side, dissect, frames_needed, hexdump, load_side, render_message, render_scapy
from pcapdns.tui.safe import text

_VIEWS = (("decoded", "Decoded", render_message), ("scapy", "Scapy", render_scapy), ("hex", "Hex", hexdump))


def headline(row: dict[str, Any]) -> Text:
    out = Text()
    out.append(text(row.get("qname") or "(no question)", "bold"))
    out.append(f"  {row.get('qtype_name') or ''}  ")
    rc = row.get("rcode_name")
    out.append(text(rc or str(row.get("status")), "bold red" if rc != "NOERROR" else "bold green"))
    rtt = row.get("rtt")
    if rtt is not None:
        out.append(f"  {rtt * 1000:,.1f} ms")
    if row.get("retransmissions"):
        out.append(f"  {row['retransmissions']} retransmission(s)", style="yellow")
    out.append("   ")
    out.append(text(f"{row.get('client')} → {row.get('server')}  {row.get('file')}", "dim"))
    return out


class DetailScreen(Screen[None]):
    """``d`` decoded, ``s`` scapy, ``x`` hex dump; ``escape`` goes back."""

    BINDINGS = [
        Binding("escape,q", "app.pop_screen", "back"),
        Binding("d", "tab('decoded')", "decoded"),
        Binding("s", "tab('scapy')", "scapy"),
        Binding("x", "tab('hex')", "hex"),
    ]

    def __init__(
        self,
        row: dict[str, Any],
        malformed: pl.DataFrame,
        ports: frozenset[int] = DEFAULT_PORTS,
        file_id: int = 0,
    ) -> None:
        super().__init__()
        self.file_id = file_id
        self.row = row
        self.malformed = malformed
        self.ports = ports
        self.sides: tuple[Side, Side] | None = None

    def compose(self) -> ComposeResult:
        yield Static(headline(self.row), id="headline")
        with TabbedContent(id="views"):
            for key, title, _ in _VIEWS:
                # hex rows are 72 cells wide: query above response; the others side by side
                with TabPane(title, id=key), Vertical() if key == "hex" else Horizontal():
                    for role in ("query", "response"):
                        with VerticalScroll(classes="side"):
                            yield Static(Text("loading…", style="italic"), id=f"{key}-{role}")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="detail")
    def load(self) -> None:
        """Read both messages' frames in one pass, show them decoded, then scapy's dissection.

        scapy comes last and apart: its first import takes seconds (the app preloads it in the
        background once the analysis is done), and the decoded view must not wait for it.
        """
        r = self.row
        path, tid, tx = str(r["file"]), int(r["trans_id"]), str(r["transport"])
        frames = read_frames(path, frames_needed(tx, r["query_frame"], r["response_frame"]))
        q, s = (
            load_side(path, role, r[f"{role}_frame"], tid, self.malformed, self.ports, tx, self.file_id,
                      frames=frames, scapy=False)
            for role in ("query", "response")
        )  # fmt: skip
        self.post_message(DetailLoaded(q, s))
        dissect(q)
        dissect(s)
        self.post_message(ScapyLoaded(q, s))

    def on_detail_loaded(self, message: DetailLoaded) -> None:
        self.sides = (message.query, message.response)
        for key, _, render in _VIEWS:
            for side in self.sides:
                self.query_one(f"#{key}-{side.role}", Static).update(render(side))
        if any(side.malformed for side in self.sides):
            self.action_tab("hex")

    def on_scapy_loaded(self, message: ScapyLoaded) -> None:
        for side in (message.query, message.response):
            self.query_one(f"#scapy-{side.role}", Static).update(render_scapy(side))

    def action_tab(self, key: str) -> None:
        self.query_one("#views", TabbedContent).active = key
