"""The anomaly engine: rules over transactions and time windows that say what broke, and why."""
