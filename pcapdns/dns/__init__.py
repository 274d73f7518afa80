"""DNS messages on the wire: our own parser, built for offsets and stable malformation codes.

``parse`` holds :func:`~pcapdns.dns.parse.parse_message` (one message, never raises, explains
what is wrong); ``columnar`` proves whole batches well-formed with numpy and defers the rest to it;
``names`` reads and prints domain names; ``codes`` maps protocol numbers to names.  Nothing is
imported here, so importing one submodule does not pull in numpy or the others.
"""
