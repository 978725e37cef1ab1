"""The engine: from a submitted run to its final event (see ARCHITECTURE.md)."""
