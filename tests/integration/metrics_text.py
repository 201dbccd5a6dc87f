"""Reading a /metrics answer in tests: the value of one series, by name and labels."""

import httpx
from prometheus_client.parser import text_string_to_metric_families


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: list[tuple[str, dict[str, str], float]] = [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels`` (0 when there is none)."""
        return sum(
            value
            for sample, sample_labels, value in self.samples
            if sample == name and all(sample_labels.get(key) == wanted for key, wanted in labels.items())
        )

    def has(self, name: str, **labels: str) -> bool:
        return any(
            sample == name and all(sample_labels.get(key) == wanted for key, wanted in labels.items())
            for sample, sample_labels, _ in self.samples
        )

    def label_values(self, name: str, label: str) -> set[str]:
        return {labels[label] for sample, labels, _ in self.samples if sample == name and label in labels}


def scrape(url: str) -> Scrape:
    response = httpx.get(url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return Scrape(response.text)
