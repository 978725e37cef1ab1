"""The pure core: templates, planning, handshakes, estimates, quota and retry arithmetic.

Nothing here does I/O or imports an adapter library; ``tests/unit/test_layout.py`` keeps it so.
"""
