"""`snakemake --report` gives one self-contained HTML page with every table and figure, captioned."""

import base64
import re

import pytest

from workflow_runs import snakemake

FIGURES = ("coverage_at_k", "item_recall_by_popularity", "accuracy_coverage_tradeoff", "lorenz", "weight_landscape")


@pytest.mark.slow
def test_report_embeds_every_figure_and_table_with_its_caption(demo_copy):
    snakemake(demo_copy, "--report", "report.html")
    html = (demo_copy / "report.html").read_text()
    for figure in FIGURES:
        embedded = re.search(rf"{figure}\.png;base64,([A-Za-z0-9+/=]+)", html)
        assert embedded, f"{figure}.png is not embedded in the report"
        png = base64.b64decode(embedded.group(1))
        assert png.startswith(b"\x89PNG\r\n\x1a\n"), f"{figure}.png is not a PNG"
        assert png == (demo_copy / "results/ml-100k/figures" / f"{figure}.png").read_bytes()
    for table in ("summary.csv", "paper_comparison.csv", "significance.csv"):
        assert table in html
    # captions are rendered with the dataset and config values, not left as templates
    assert "Catalog coverage against list length on" in html
    assert "ml-100k" in html and "{{ snakemake" not in html
    assert "src=\"http" not in html  # nothing to fetch: the page stands alone
