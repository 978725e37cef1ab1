"""Worker types: one module each, registered through ``orchestrator.sdk.WorkerType``.

Importing this package imports every module in it (``orchestrator.sdk.load_worker_modules``).
"""
