"""Rich progress bars for a run: one bar per stage, fed by the run's events.

``orchestrator run`` and ``orchestrator demo`` both render with this, whether the events
come from Redis directly or from the API's SSE stream.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

STATUS_STYLE = {
    "completed": "green",
    "cached": "cyan",
    "skipped": "yellow",
    "failed": "red",
    "cancelled": "red",
    "retrying": "magenta",
    "running": "blue",
}


def follow_with_bars(
    events: Iterable[tuple[str, dict[str, Any]]], console: Console
) -> dict[str, Any]:
    """Render until the final event; return it."""
    final: dict[str, Any] = {}
    columns = (
        TextColumn("{task.description:<16}"),
        BarColumn(bar_width=20),
        TextColumn("{task.percentage:>5.0f}%"),
        TextColumn("{task.fields[status]:<10}", style="bold"),
        TextColumn("{task.fields[message]}", style="dim"),
        TimeElapsedColumn(),
    )
    bars: dict[str, TaskID] = {}
    with Progress(*columns, console=console, transient=False) as progress:
        overall = progress.add_task("[bold]run", total=100, status="pending", message="")
        for _event_id, event in events:
            stage = event.get("stage")
            status = event.get("status", "")
            if event.get("type") == "final":
                final = event
                progress.update(
                    overall, completed=100, status=status, message=event.get("message", "")
                )
                break
            if stage is None:
                progress.update(overall, status=status, message=event.get("message", ""))
                continue
            if stage not in bars:
                bars[stage] = progress.add_task(stage, total=100, status="", message="")
            fields: dict[str, Any] = {"message": (event.get("message") or "")[:40]}
            if status:
                style = STATUS_STYLE.get(status, "white")
                fields["status"] = f"[{style}]{status}[/{style}]"
            progress.update(bars[stage], completed=event.get("progress", 0) or 0, **fields)
            done = sum(1 for t in progress.tasks if t.id != overall and t.percentage >= 100)
            remaining = event.get("estimated_remaining_ms")
            eta = f"~{remaining / 1000:.0f} s left" if remaining else ""
            progress.update(
                overall, completed=100 * done / max(1, len(bars)), status="running", message=eta
            )
    return final
