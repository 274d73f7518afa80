"""The textual TUI (``pcapdns tui``): displays what the headless pipeline computed."""
