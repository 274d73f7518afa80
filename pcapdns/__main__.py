"""``python -m pcapdns`` runs the command-line interface."""

from pcapdns.launch import main

if __name__ == "__main__":  # not when a worker process re-imports the main module (as __mp_main__)
    raise SystemExit(main())
