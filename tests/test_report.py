"""`snakemake --report` gives one self-contained HTML page with every table and figure, captioned."""

import base64
import io
import re
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest
import yaml
from docutils.core import publish_parts

from semtail import plan
from workflow_runs import REPO, snakemake

FIGURES = ("coverage_at_k", "item_recall_by_popularity", "accuracy_coverage_tradeoff", "lorenz", "weight_landscape")
ADVERSARY_OUTPUTS = ("adversary.csv", "adversary.md", "figures/adversary.png", "figures/adversary.pdf")


@pytest.mark.slow
def test_report_embeds_every_figure_and_table_with_its_caption(demo_copy):
    done = snakemake(demo_copy, "--report", "report.html")
    html = (demo_copy / "report.html").read_text()
    for figure in FIGURES:
        embedded = re.search(rf"{figure}\.png;base64,([A-Za-z0-9+/=]+)", html)
        assert embedded, f"{figure}.png is not embedded in the report"
        png = base64.b64decode(embedded.group(1))
        assert png.startswith(b"\x89PNG\r\n\x1a\n"), f"{figure}.png is not a PNG"
        assert png == (demo_copy / "results/ml-100k/figures" / f"{figure}.png").read_bytes()
    for table in ("summary.csv", "paper_comparison.csv", "significance.csv", "adversary.csv"):
        assert table in html
    # captions are rendered with the dataset and config values, not left as templates
    assert "Catalog coverage against list length on" in html
    assert "ml-100k" in html and "{{ snakemake" not in html
    assert 'src="http' not in html  # nothing to fetch: the page stands alone
    # no docutils message, neither printed nor in a caption ("System Message: ERROR/3")
    assert "System Message" not in html and "Undefined substitution" not in done.stdout + done.stderr

    # After a failed plot job (Snakemake removes a failed job's outputs), the report is built from
    # what exists, and says what is left out and how to make it.
    for name in ADVERSARY_OUTPUTS:
        (demo_copy / "results/ml-100k" / name).unlink()
    done = snakemake(demo_copy, "--report", "without_adversary.html")
    output = done.stdout + done.stderr
    # resources.csv, made from every job's records, is left out with them
    missing = " ".join([*(f"results/ml-100k/{name}" for name in ADVERSARY_OUTPUTS), "results/resources.csv"])
    assert "--report: 5 of the workflow's outputs do not exist" in output
    assert f"make them first (`snakemake {missing}`" in output
    html = (demo_copy / "without_adversary.html").read_text()
    assert "summary.csv" in html and "adversary.csv" not in html
    assert not (demo_copy / "results/ml-100k/adversary.csv").exists()  # the report makes nothing


@pytest.mark.parametrize(
    "argv, reporting",
    [
        (["snakemake", "--report", "report.html"], True),
        (["snakemake", "--cores", "1", "--report=report.html"], True),
        (["snakemake", "--report", "report.html", "--report-after-run"], False),
        (["snakemake", "--cores", "all"], False),
        (["snakemake", "results/report.html"], False),
    ],
)
def test_only_a_report_build_cuts_the_targets_to_what_exists(argv, reporting):
    assert plan.building_report(argv) is reporting


def test_report_targets_leave_out_what_does_not_exist_and_say_how_to_make_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("results/d").mkdir(parents=True)
    Path("results/d/summary.csv").write_text("x")
    targets = ["results/d/summary.csv", "results/d/adversary.csv", "results/d/adversary.md"]
    present, warning = plan.report_targets(targets)
    assert present == ["results/d/summary.csv"]
    assert warning == (
        "--report: 2 of the workflow's outputs do not exist (a job failed, or has not run), so the report is "
        "built without them: results/d/adversary.csv, results/d/adversary.md. To have them in it, make them first "
        "(`snakemake results/d/adversary.csv results/d/adversary.md`; a failed job's log says why it failed), then "
        "build the report again."
    )
    assert plan.report_targets(["results/d/summary.csv"]) == (["results/d/summary.csv"], None)
    Path("results/resources.csv").write_text("x")  # made from every job's records: left out with them
    present, warning = plan.report_targets(
        [*targets, "results/resources.csv"], reading_every_job=("results/resources.csv",)
    )
    assert present == ["results/d/summary.csv"] and "results/resources.csv" in warning
    many = [f"results/d/run{n}.json" for n in range(12)]
    _, warning = plan.report_targets(many)
    assert "results/d/run9.json and 2 more." in warning and "(`snakemake`;" in warning


@pytest.mark.parametrize("caption", sorted((REPO / "report").glob("*.rst")), ids=lambda path: path.name)
@pytest.mark.filterwarnings('ignore:Argument "writer_name":PendingDeprecationWarning')  # as Snakemake calls it
def test_every_caption_renders_without_a_docutils_message(caption):
    """As Snakemake renders a caption: Jinja with the job's `snakemake` object, then docutils to HTML.
    A docutils message (e.g. `|change|` read as an undefined substitution) is printed at every
    report build and shows in the page as "System Message: ERROR/3"."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    snakemake_object = SimpleNamespace(
        config=config,
        wildcards=SimpleNamespace(dataset="ml-100k"),
        params=SimpleNamespace(compare=plan.compare_settings(config)),
    )
    environment = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    text = environment.from_string(caption.read_text()).render(snakemake=snakemake_object)
    messages = io.StringIO()
    html = publish_parts(text, writer_name="html", settings_overrides={"warning_stream": messages, "report_level": 1})[
        "html_body"
    ]
    assert messages.getvalue() == "" and "System Message" not in html
