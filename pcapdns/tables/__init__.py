"""Tables: every aggregation pcapdns does happens here, in polars, over declared schemas."""
