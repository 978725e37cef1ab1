"""``report_builder.build``: the run's deliverable, as Markdown and a self-contained HTML page.

Everything is found by field name across the inputs: ``articles`` (from every fetch and
classify shard; the classified copy of an article wins over its raw fetched one), the research
output (``subtopics``, ``keywords``), the findings (``findings``, ``answer``) and every
stage's ``method`` for the methods table. The HTML page has inline CSS and inline SVG bar
charts, no script and no external resource, so it renders the same from object storage, a mail
attachment or a file. Text from feeds is untrusted: every piece of it is escaped
(``html.escape`` in HTML, backslashes in Markdown) and only http(s) links become links.
No PDF: no renderer ships with the product.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from orchestrator.sdk import StageContext, StageResult, WorkerType
from workers.lib.contract import articles_in, depth_of, field_in, relevance_of
from workers.lib.feeds import safe_link
from workers.report_builder.html import describe_method, render_html

report_builder = WorkerType(
    "report_builder",
    display_name="Report builder",
    capabilities=["markdown", "html", "svg-chart"],
)

#: Articles listed in the top table, by depth.
TOP_ARTICLES = {"quick": 10, "standard": 20, "comprehensive": 40}
#: What produced each kind of upstream output: the first field that identifies it.
KINDS = (
    ("subtopics", "topic_researcher"),
    ("feeds", "rss_source_finder"),
    ("feeds_fetched", "feed_fetcher"),
    ("threshold", "content_classifier"),
    ("findings", "universal_researcher"),
)
OTHER = "(no subtopic)"


@dataclass
class Report:
    """Everything the renderers need, already gathered and ranked (plain values only)."""

    topic: str
    depth: str
    generated: str
    execution_id: str
    articles: list[dict[str, Any]]
    top: list[dict[str, Any]]
    subtopics: list[str] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    answer: str = ""
    findings: list[dict[str, str]] = field(default_factory=list)
    methods: dict[str, str] = field(default_factory=dict)
    llm_used: bool = False
    llm_configured: bool = False
    model: str = ""

    def count(self, label: str) -> int:
        return sum(1 for a in self.articles if a.get("label") == label)

    @property
    def sources(self) -> list[str]:
        return sorted({str(a.get("source") or "") for a in self.articles} - {""})

    def by_subtopic(self) -> list[tuple[str, int, int]]:
        """(subtopic, relevant, related) for every subtopic named or assigned."""
        return _tally(self.articles, "subtopic", [*self.subtopics, OTHER])

    def by_source(self) -> list[tuple[str, int, int]]:
        return _tally(self.articles, "source", self.sources)

    @property
    def heading(self) -> str:
        return "LLM-assisted" if self.llm_used else "Offline methods"

    def methods_line(self) -> str:
        """The one sentence that says whether an LLM was involved."""
        if self.llm_used:
            return f"An LLM ({self.model}) was used where marked below; the rest is offline."
        if self.llm_configured:
            return "An LLM was configured but no stage used it: offline methods throughout."
        return "No LLM was configured: every stage used offline methods."


def _tally(
    articles: list[dict[str, Any]], key: str, order: list[str]
) -> list[tuple[str, int, int]]:
    relevant: Counter[str] = Counter()
    related: Counter[str] = Counter()
    for article in articles:
        name = str(article.get(key) or OTHER)
        if article.get("label") == "relevant":
            relevant[name] += 1
        elif article.get("label") == "related":
            related[name] += 1
    names = list(dict.fromkeys([*order, *relevant, *related]))
    rows = [(n, relevant[n], related[n]) for n in names]
    return [r for r in rows if r[0] != OTHER or r[1] or r[2]]


def methods_of(inputs: dict[str, Any]) -> dict[str, str]:
    """``{worker type: method}`` of every upstream output that names its method, in pipeline
    order (research, sources, fetch, classify, findings), shards of one kind merged."""
    methods: dict[str, set[str]] = {}
    for key in sorted(inputs):
        value = inputs[key]
        if not isinstance(value, dict) or not value.get("method"):
            continue
        kind = next((k for f, k in KINDS if f in value), key.rsplit("-", 1)[0])
        methods.setdefault(kind, set()).add(str(value["method"]))
    order = [k for _, k in KINDS]
    ranked = sorted(methods, key=lambda k: (order.index(k) if k in order else len(order), k))
    return {kind: ", ".join(sorted(methods[kind])) for kind in ranked}


def gather(ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> Report:
    """The report's content from the inputs: ranked, counted, nothing rendered yet."""
    depth = depth_of({"depth": params.get("depth") or field_in(inputs, "depth")})
    articles = articles_in(inputs)  # a classified copy wins over the fetched one
    ranked = sorted(
        articles, key=lambda a: (relevance_of(a), str(a.get("published") or "")), reverse=True
    )
    on_topic = [a for a in ranked if a.get("label") in {"relevant", "related"}]
    methods = {**methods_of(inputs), "report_builder": "template"}
    findings = field_in(inputs, "findings", [])
    return Report(
        topic=str(params.get("topic") or field_in(inputs, "topic", "the topic")),
        depth=depth,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        execution_id=ctx.execution_id,
        articles=articles,
        top=(on_topic or ranked)[: TOP_ARTICLES[depth]],
        subtopics=[str(s) for s in field_in(inputs, "subtopics", [])],
        keywords=[str(k) for k in field_in(inputs, "keywords", [])],
        answer=str(field_in(inputs, "answer", "")),
        findings=[f for f in findings if isinstance(f, dict)],
        methods=methods,
        llm_used=any("llm" in m.split(", ") for m in methods.values()),
        llm_configured=bool(ctx.settings.llm_base_url),
        model=ctx.settings.llm_model,
    )


def md(text: Any) -> str:
    """Untrusted text as inert Markdown: one line, markup characters backslash-escaped."""
    line = " ".join(str(text or "").split())
    return "".join("\\" + c if c in "\\`*_{}[]()<>#+!|~" else c for c in line)


def md_link(text: Any, link: Any) -> str:
    url = safe_link(str(link or ""))
    if not url:
        return md(text)
    for raw, quoted in ((" ", "%20"), ("(", "%28"), (")", "%29"), ("<", "%3C"), (">", "%3E")):
        url = url.replace(raw, quoted)
    return f"[{md(text)}]({url})"


def render_markdown(report: Report) -> str:
    """The report as Markdown: same sections as the HTML page, tables for the charts."""
    out = [
        f"# Market research: {md(report.topic)}",
        "",
        f"_Generated {report.generated}, depth {md(report.depth)}, run {md(report.execution_id)}._",
        "",
        f"> **{report.heading}.** {report.methods_line()}",
        "",
        f"**{len(report.articles)}** articles read from **{len(report.sources)}** sources: "
        f"**{report.count('relevant')}** relevant, **{report.count('related')}** related.",
        "",
        "## Answer",
        "",
        md(report.answer) or "_No answer was produced._",
        "",
    ]
    if report.findings:
        out += ["### Findings", ""]
        for number, finding in enumerate(report.findings, 1):
            source = md_link(finding.get("source") or "source", finding.get("link"))
            out.append(f"{number}. {md(finding.get('text'))} ({source})")
        out.append("")
    for title, rows in (
        ("Relevant articles by subtopic", report.by_subtopic()),
        ("Relevant articles by source", report.by_source()),
    ):
        out += [f"## {title}", "", "| | relevant | related |", "|---|---:|---:|"]
        out += [f"| {md(name)} | {rel} | {near} |" for name, rel, near in rows]
        out.append("")
    out += ["## Top articles", "", "| article | source | published | subtopic | relevance |"]
    out.append("|---|---|---|---|---:|")
    for a in report.top:
        out.append(
            f"| {md_link(a.get('title'), a.get('link'))} | {md(a.get('source'))} "
            f"| {md(str(a.get('published') or '')[:10])} | {md(a.get('subtopic') or '')} "
            f"| {relevance_of(a):.2f} |"
        )
    out += ["", "## Subtopics and keywords", ""]
    out += [f"- {md(s)}" for s in report.subtopics]
    out += ["", "Keywords: " + ", ".join(md(k) for k in report.keywords), "", "## Methods", ""]
    out += ["| stage | method |", "|---|---|"]
    out += [
        f"| {md(k)} | {md(describe_method(m, report.model))} |" for k, m in report.methods.items()
    ]
    return "\n".join(out) + "\n"


@report_builder.action("build")
def build(ctx: StageContext, inputs: dict[str, Any], params: dict[str, Any]) -> StageResult:
    """Build report.md and report.html from the classified articles and the findings."""
    ctx.progress(10, "gathering articles, findings and methods")
    report = gather(ctx, inputs, params)
    ctx.progress(40, "writing Markdown")
    markdown = render_markdown(report).encode()
    ctx.progress(60, "writing HTML")
    page = render_html(report).encode()
    keys = {
        "report.md": ctx.deliver("report.md", markdown, "text/markdown; charset=utf-8"),
        "report.html": ctx.deliver("report.html", page, "text/html; charset=utf-8"),
    }
    ctx.progress(100, f"report of {len(report.articles)} articles delivered")
    output = {
        "deliverables": keys,
        "articles": len(report.articles),
        "relevant": report.count("relevant"),
        "methods": report.methods,
        "llm_used": report.llm_used,
    }
    return StageResult(output=output, items_processed=len(report.articles))
