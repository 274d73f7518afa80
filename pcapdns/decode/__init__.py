"""Below DNS: frames in, DNS payloads (with their transport) out.

:class:`Decoder` (``slow.py``) decodes any frame one at a time and is the reference; the columnar
fast path (``columnar.py``) takes the common case a batch at a time and hands the rest to it.
"""

from pcapdns.decode.slow import OUTCOMES, Decoder
from pcapdns.model import DEFAULT_PORTS

__all__ = ["DEFAULT_PORTS", "OUTCOMES", "Decoder"]
