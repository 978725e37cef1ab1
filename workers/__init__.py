"""Worker types: one module each, registered through ``orchestrator.sdk.WorkerType``.

``orchestrator.sdk.load_worker_modules`` imports every module in it but ``testing`` (the worker
types of the tests and benchmarks, loaded only where ``ORCH_WORKER_MODULES`` names
``workers.testing``); ``lib`` holds what the reference types share.
"""
