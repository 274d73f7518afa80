"""pcapdns: a DNS packet-capture analyzer.

The package root stays import-light so that ``pcapdns --help`` is fast; import the stage you need
(``pcapdns.pipeline``, ``pcapdns.dns.parse`` ...) directly.
"""

__version__ = "0.1.0"
