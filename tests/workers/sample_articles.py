"""Realistic articles, as ``feed_fetcher.fetch`` outputs them, about three unrelated topics.

Written inline so that these tests stand alone (they do not need ``workers/corpus/``).
"""

from __future__ import annotations

import hashlib
from typing import Any

_RAW = [
    (
        "EV Daily",
        "https://evdaily.example/feed.xml",
        "Electric vehicle sales hit a record as battery prices fall",
        "Global sales of electric vehicles rose 35% last year, helped by cheaper lithium-ion "
        "battery packs. Analysts expect battery prices to keep falling as new cell factories "
        "open in Europe and North America. Cheaper batteries make electric cars competitive "
        "with petrol models on price.",
    ),
    (
        "EV Daily",
        "https://evdaily.example/feed.xml",
        "Fast charging network expands along European motorways",
        "Ionity and Tesla are adding hundreds of fast charging stations to motorways across "
        "Europe. Drivers of electric vehicles have complained that public charging is "
        "unreliable; the new chargers deliver up to 350 kW. The charging network should cover "
        "every major route by 2026.",
    ),
    (
        "Auto Tech Review",
        "https://autotech.example/rss",
        "Solid-state batteries promise longer range for electric cars",
        "Toyota says its solid-state batteries will give electric cars a range of 1,000 km and "
        "charge in ten minutes. Solid-state batteries replace the liquid electrolyte of "
        "lithium-ion cells with a solid one, which is safer and denser.",
    ),
    (
        "Auto Tech Review",
        "https://autotech.example/rss",
        "Governments rethink subsidies for electric vehicle buyers",
        "Germany ended its purchase subsidy for electric vehicles and sales dipped. Other "
        "governments are replacing subsidies with tax credits and stricter emission rules "
        "for carmakers, hoping to keep electric vehicle adoption growing.",
    ),
    (
        "Green Motoring",
        "https://greenmotoring.example/atom.xml",
        "Chinese carmakers lead the electric vehicle market",
        "BYD overtook Tesla as the largest maker of electric vehicles by volume. Chinese "
        "carmakers control much of the battery supply chain, from lithium refining to cell "
        "production, and export cheaper electric cars to Europe despite new tariffs.",
    ),
    (
        "Green Motoring",
        "https://greenmotoring.example/atom.xml",
        "Used electric cars: what to check about battery health",
        "Buyers of used electric cars should ask for a battery health report. Battery "
        "degradation is slower than feared: most packs keep 90% of their capacity after "
        "100,000 miles, so second-hand electric vehicles are a good deal.",
    ),
    (
        "Bean Report",
        "https://beanreport.example/feed",
        "Arabica coffee prices climb to a record after drought in Brazil",
        "Arabica coffee futures reached their highest price in decades after drought and frost "
        "damaged harvests in Brazil. Roasters warn that shoppers will pay more for a bag of "
        "coffee beans and a cup in cafes.",
    ),
    (
        "Bean Report",
        "https://beanreport.example/feed",
        "Specialty coffee shops bet on single-origin beans",
        "Independent cafes are selling single-origin coffee from Ethiopia and Colombia at "
        "premium prices. Specialty roasters say customers care about traceability, brewing "
        "method and how the coffee farmers are paid.",
    ),
    (
        "Daily Grind",
        "https://dailygrind.example/rss.xml",
        "Cold brew and ready-to-drink coffee drive growth",
        "Ready-to-drink coffee and cold brew are the fastest growing coffee segments. Young "
        "consumers buy canned cold brew in supermarkets, and big coffee chains are launching "
        "new iced drinks for the summer.",
    ),
    (
        "Daily Grind",
        "https://dailygrind.example/rss.xml",
        "Climate change threatens coffee farms",
        "Rising temperatures could halve the land suitable for growing arabica coffee by 2050. "
        "Coffee farmers are planting shade trees and testing heat-tolerant varieties such as "
        "robusta and liberica.",
    ),
    (
        "Qubit Weekly",
        "https://qubitweekly.example/feed.xml",
        "Google unveils a quantum chip with better error correction",
        "Google's new quantum processor keeps logical qubits stable longer thanks to improved "
        "quantum error correction. Researchers say fault-tolerant quantum computers are still "
        "years away but the error rates fall as more physical qubits are added.",
    ),
    (
        "Qubit Weekly",
        "https://qubitweekly.example/feed.xml",
        "IBM roadmap targets thousands of qubits",
        "IBM plans quantum computing systems with thousands of superconducting qubits linked "
        "together. The company says quantum computers will first be useful for chemistry "
        "simulation and materials research.",
    ),
    (
        "Science Desk",
        "https://sciencedesk.example/atom",
        "Startups race to build trapped-ion quantum computers",
        "Quantinuum and IonQ use trapped ions instead of superconducting circuits. Trapped-ion "
        "qubits have high fidelity but are slower; investors have put billions into quantum "
        "computing startups this year.",
    ),
]


def _id(link: str) -> str:
    return hashlib.sha256(link.encode()).hexdigest()[:16]


def articles() -> list[dict[str, Any]]:
    """Thirteen articles: six on electric vehicles, four on coffee, three on quantum computing."""
    out = []
    for n, (source, feed_url, title, summary) in enumerate(_RAW):
        host = feed_url.split("/")[2]
        link = f"https://{host}/articles/{n + 1}"
        out.append(
            {
                "id": _id(link),
                "title": title,
                "link": link,
                "summary": summary,
                "published": f"2025-03-{n + 1:02d}T09:00:00+00:00",
                "source": source,
                "feed_url": feed_url,
            }
        )
    return out


EV = {a["id"] for a in articles()[:6]}
COFFEE = {a["id"] for a in articles()[6:10]}
QUANTUM = {a["id"] for a in articles()[10:]}
