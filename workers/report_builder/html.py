"""The report as one self-contained HTML page: inline CSS, inline SVG charts, no script.

Every string that reaches the page goes through ``_e`` (``html.escape``) and every link
through ``safe_link``: feed titles, summaries and findings are untrusted input.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

from workers.lib.contract import relevance_of
from workers.lib.feeds import safe_link

if TYPE_CHECKING:
    from workers.report_builder.build import Report

METHOD_NAMES = {
    "offline": "offline phrase extraction",
    "keyword_match": "feed discovery, scored by keyword match over feed items",
    "conditional_get": "RSS/Atom fetch with conditional GET (ETag, Last-Modified)",
    "tfidf": "TF-IDF similarity (scikit-learn)",
    "extractive": "extractive summary of the most relevant articles",
    "llm": "LLM",
    "template": "Markdown and HTML templates, SVG charts",
}
RELEVANT, RELATED = "#2563eb", "#93c5fd"
CSS = """
:root{--ink:#1f2937;--muted:#6b7280;--line:#e5e7eb;--soft:#f8fafc;--accent:#2563eb}
*{box-sizing:border-box}
body{margin:0;background:#f1f5f9;color:var(--ink);
font:15px/1.55 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1040px;margin:0 auto;padding:32px 28px 48px;background:#fff;min-height:100vh}
h1{font-size:30px;margin:0 0 4px;letter-spacing:-.01em}
h2{font-size:19px;margin:34px 0 12px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:15px;margin:20px 0 8px;color:#374151}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
.meta{color:var(--muted);margin:0 0 18px;font-size:13px}
.banner{border-left:4px solid #d97706;background:#fffbeb;padding:10px 14px;border-radius:4px}
.banner.llm{border-color:#059669;background:#ecfdf5}
.stats{display:grid;grid-template-columns:repeat(5,1fr);gap:12px;margin:20px 0 6px}
.stat{background:var(--soft);border:1px solid var(--line);border-radius:8px;padding:12px 14px}
.stat b{display:block;font-size:26px;line-height:1.1}
.stat span{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.answer{font-size:16px;background:var(--soft);padding:14px 16px;border-radius:8px;margin:0}
ol.findings li{margin:6px 0}.src{color:var(--muted);font-size:13px}
.charts{display:grid;grid-template-columns:1fr 1fr;gap:24px}
.charts figure{margin:0}.charts figcaption{font-weight:600;margin-bottom:6px}
svg text{font:12px -apple-system,"Segoe UI",Roboto,Arial,sans-serif;fill:#374151}
table{width:100%;border-collapse:collapse;font-size:13.5px}
th{text-align:left;color:var(--muted);font-weight:600;font-size:12px;text-transform:uppercase;
letter-spacing:.03em;border-bottom:2px solid var(--line);padding:6px 8px}
td{border-bottom:1px solid var(--line);padding:7px 8px;vertical-align:top}
tr:nth-child(even) td{background:#fafafa}
td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
td.date{white-space:nowrap;color:var(--muted)}
.summary{color:var(--muted);font-size:12.5px;margin-top:2px}
.label{display:inline-block;border-radius:10px;padding:0 8px;font-size:11.5px;margin-left:4px}
.label.relevant{background:#dbeafe;color:#1e40af}.label.related{background:#eff6ff;color:#3b82f6}
.label.off_topic{background:#f3f4f6;color:#6b7280}
.chips span{display:inline-block;background:var(--soft);border:1px solid var(--line);
border-radius:14px;padding:2px 10px;margin:0 6px 6px 0;font-size:13px}
footer{margin-top:36px;color:var(--muted);font-size:12px}
@media print{body{background:#fff}main{padding:0}}
"""


def _e(value: Any) -> str:
    return escape(str(value if value is not None else ""), quote=True)


def _link(text: Any, link: Any) -> str:
    url = safe_link(str(link or ""))
    if not url:
        return _e(text)
    return f'<a href="{_e(url)}" rel="noopener noreferrer nofollow">{_e(text)}</a>'


def describe_method(method: str, model: str) -> str:
    """A method code as words (``tfidf`` -> ``TF-IDF similarity (scikit-learn)``)."""
    names = [METHOD_NAMES.get(m, m) for m in method.split(", ")]
    return ", ".join(f"LLM ({model})" if n == "LLM" else n for n in names)


def _without(topic: str, name: str) -> str:
    """``name`` without a leading ``topic`` ("EVs pricing" -> "pricing" when about EVs)."""
    prefix = topic.lower() + " "
    return name[len(prefix) :] if topic and name.lower().startswith(prefix) else name


def bar_chart(rows: list[tuple[str, int, int]], label: str, *, topic: str = "") -> str:
    """Horizontal stacked bars (relevant, then related) as inline SVG; labels escaped.

    A label that starts with the topic loses that prefix ("EVs pricing" -> "pricing"): the
    chart is about the topic already, and the bars need the room.
    """
    rows = [(_without(topic, name), r, n) for name, r, n in rows or [("nothing found", 0, 0)]]
    width, label_w, bar_w, row_h, top = 480, 180, 240, 26, 6
    height = top + row_h * len(rows) + 30
    peak = max(rel + near for _, rel, near in rows) or 1
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
        f'role="img" aria-label="{_e(label)}">'
    ]
    for index, (name, rel, near) in enumerate(rows):
        y = top + index * row_h
        short = name if len(name) <= 28 else name[:27].rstrip() + "…"
        w_rel, w_near = bar_w * rel / peak, bar_w * near / peak
        parts += [
            f"<g><title>{_e(name)}: {rel} relevant, {near} related</title>",
            f'<text x="{label_w - 8}" y="{y + 16}" text-anchor="end">{_e(short)}</text>',
            f'<rect x="{label_w}" y="{y + 4}" width="{bar_w}" height="16" fill="#f1f5f9" rx="3"/>',
            f'<rect x="{label_w}" y="{y + 4}" width="{w_rel:.1f}" height="16" '
            f'fill="{RELEVANT}" rx="3"/>',
            f'<rect x="{label_w + w_rel:.1f}" y="{y + 4}" width="{w_near:.1f}" height="16" '
            f'fill="{RELATED}" rx="3"/>',
            f'<text x="{label_w + bar_w + 8}" y="{y + 16}">{rel}'
            + (f" + {near}" if near else "")
            + "</text></g>",
        ]
    legend_y = top + row_h * len(rows) + 12
    parts += [
        f'<rect x="{label_w}" y="{legend_y}" width="11" height="11" fill="{RELEVANT}" rx="2"/>',
        f'<text x="{label_w + 16}" y="{legend_y + 10}">relevant</text>',
        f'<rect x="{label_w + 86}" y="{legend_y}" width="11" height="11" fill="{RELATED}" rx="2"/>',
        f'<text x="{label_w + 102}" y="{legend_y + 10}">related</text>',
        "</svg>",
    ]
    return "\n".join(parts)


def _stats(report: Report) -> str:
    cells = [
        (len(report.articles), "articles read"),
        (report.count("relevant"), "relevant"),
        (report.count("related"), "related"),
        (len(report.sources), "sources"),
        (len(report.subtopics), "subtopics"),
    ]
    inner = "".join(f'<div class="stat"><b>{n}</b><span>{_e(t)}</span></div>' for n, t in cells)
    return f'<section class="stats">{inner}</section>'


def _findings(report: Report) -> str:
    answer = _e(report.answer) or "<em>No answer was produced.</em>"
    items = "".join(
        f'<li>{_e(f.get("text"))} <span class="src">— '
        f"{_link(f.get('source') or 'source', f.get('link'))}</span></li>"
        for f in report.findings
    )
    findings = f'<h3>Findings</h3><ol class="findings">{items}</ol>' if items else ""
    return f'<h2>Answer</h2><p class="answer">{answer}</p>{findings}'


def _table(report: Report) -> str:
    rows = []
    for a in report.top:
        label = str(a.get("label") or "")
        badge = f'<span class="label {_e(label)}">{_e(label.replace("_", " "))}</span>'
        relevance = relevance_of(a)
        rows.append(
            "<tr>"
            f"<td>{_link(a.get('title'), a.get('link'))}"
            f'<div class="summary">{_e(_clip(a.get("summary"), 180))}</div></td>'
            f"<td>{_e(a.get('source'))}</td>"
            f'<td class="date">{_e(str(a.get("published") or "")[:10])}</td>'
            f"<td>{_e(_without(report.topic, str(a.get('subtopic') or '')))}</td>"
            f'<td class="num">{relevance:.2f}{badge if label else ""}</td>'
            "</tr>"
        )
    head = "<tr><th>Article</th><th>Source</th><th>Published</th><th>Subtopic</th>"
    head += '<th style="text-align:right">Relevance</th></tr>'
    return f"<table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _clip(text: Any, limit: int) -> str:
    text = str(text or "")
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + "…"


def render_html(report: Report) -> str:
    """The whole page."""
    banner_class = "banner llm" if report.llm_used else "banner"
    methods = "".join(
        f"<tr><td>{_e(kind)}</td><td>{_e(describe_method(method, report.model))}</td></tr>"
        for kind, method in report.methods.items()
    )
    chips = "".join(f"<span>{_e(s)}</span>" for s in report.subtopics)
    keywords = ", ".join(_e(k) for k in report.keywords)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Market research: {_e(report.topic)}</title>
<style>{CSS}</style>
</head>
<body>
<main>
<h1>Market research: {_e(report.topic)}</h1>
<p class="meta">Generated {_e(report.generated)} · depth {_e(report.depth)} ·
run {_e(report.execution_id)}</p>
<p class="{banner_class}"><strong>{report.heading}.</strong> {_e(report.methods_line())}</p>
{_stats(report)}
{_findings(report)}
<h2>What was found</h2>
<div class="charts">
<figure><figcaption>By subtopic</figcaption>
{bar_chart(report.by_subtopic(), "Articles by subtopic", topic=report.topic)}</figure>
<figure><figcaption>By source</figcaption>
{bar_chart(report.by_source(), "Articles by source")}</figure>
</div>
<h2>Top articles</h2>
{_table(report)}
<h2>Subtopics and keywords</h2>
<div class="chips">{chips}</div>
<p><strong>Keywords:</strong> {keywords}</p>
<h2>Methods</h2>
<table><thead><tr><th>Stage</th><th>Method</th></tr></thead><tbody>{methods}</tbody></table>
<footer>Built by Orchestrator's report_builder from RSS and Atom feeds. Feed text is quoted
as published and escaped; links go to the original articles.</footer>
</main>
</body>
</html>
"""
