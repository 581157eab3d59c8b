"""Scraping a metrics endpoint over HTTP and reading it with Prometheus's own parser."""

from __future__ import annotations

import asyncio
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


@dataclass(frozen=True)
class Scrape:
    content_type: str
    types: dict[str, str]  # family name -> counter, gauge, histogram, ...
    samples: list[Sample]

    def value(self, name: str, **labels: str) -> float | None:
        """The one sample ``name`` with exactly ``labels`` (None when absent)."""
        for s in self.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
        return None

    def total(self, name: str, **labels: str) -> float:
        """The sum of ``name`` over the samples whose labels include ``labels``."""
        return sum(
            float(s.value)
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def sample_names(self) -> set[str]:
        return {s.name for s in self.samples}


def scrape_sync(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = resp.read().decode()
        content_type = resp.headers.get("Content-Type", "")
    types: dict[str, str] = {}
    samples: list[Sample] = []
    for family in text_string_to_metric_families(body):
        types[family.name] = family.type
        samples.extend(family.samples)
    return Scrape(content_type=content_type, types=types, samples=samples)


async def scrape(url: str) -> Scrape:
    return await asyncio.to_thread(scrape_sync, url)
