"""The report_builder worker type: the Markdown report (``build``) and its HTML rendering
(``html``). Importing the package registers the worker type."""

from workers.report_builder import build as build
