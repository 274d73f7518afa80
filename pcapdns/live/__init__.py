"""``pcapdns live``: the runner that drives a :class:`~pcapdns.stream.Stream` from a capture
(:mod:`~pcapdns.live.runner`) and the command that wires it to its outputs (:mod:`~pcapdns.live.command`)."""
