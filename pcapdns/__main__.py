"""``python -m pcapdns`` runs the command-line interface."""

from pcapdns.cli import main

raise SystemExit(main())
