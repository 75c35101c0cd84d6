"""Every lab page exports its current result as CSV (checked against the result) and
offers a copy-link button."""

import csv
import io

import numpy as np
import panel as pn
import pytest

from posteriorlab.dashboards import export
from posteriorlab.dashboards import paths as paths_dashboard
from posteriorlab.dashboards import smc as smc_dashboard
from posteriorlab.dashboards import transformer as transformer_dashboard
from posteriorlab.dashboards import vi as vi_dashboard
from posteriorlab.labs.paths import PathsLab
from posteriorlab.labs.smc import SMCLab
from posteriorlab.labs.transformer import TransformerLab
from posteriorlab.labs.vi import VILab


def rows_of(lab, table):
    return list(csv.DictReader(io.StringIO(export.csv_bytes(table(lab.result)).decode())))


def test_smc_rows_are_the_time_steps():
    lab = SMCLab(num_particles=200)
    rows = rows_of(lab, smc_dashboard.result_table)
    assert len(rows) == lab.result.ess.size
    assert float(rows[3]["filtering_mean_1"]) == pytest.approx(lab.result.filtering_mean[3, 0])
    assert "exact_log_evidence" in rows[0]


def test_the_smc_export_holds_the_smoother_the_page_has_not_run():
    lab = SMCLab(num_particles=200, smoothing_shown=False)  # as a served page makes it
    dashboard = smc_dashboard.SMCDashboard(lab=lab)
    assert dashboard.lab.result.smoothing_mean is None  # the page is on its Particles tab
    (download,) = dashboard.controls.select(pn.widgets.FileDownload)
    rows = list(csv.DictReader(io.StringIO(download.callback().read().decode())))
    complete = dashboard.lab.complete_result()
    assert float(rows[3]["smoothing_mean_1"]) == pytest.approx(complete.smoothing_mean[3, 0])
    assert float(rows[3]["filtering_mean_1"]) == pytest.approx(complete.filtering_mean[3, 0])


def test_paths_rows_are_the_trajectories():
    lab = PathsLab()
    rows = rows_of(lab, paths_dashboard.result_table)
    assert len(rows) == lab.result.endpoints.shape[0]
    assert float(rows[0]["end_x2"]) == pytest.approx(lab.result.endpoints[0, 1], rel=1e-6)


def test_vi_rows_are_the_steps_with_kl_after_each_chunk():
    lab = VILab()
    lab.advance()
    rows = rows_of(lab, vi_dashboard.result_table)
    assert len(rows) == lab.result.bounds.size
    assert float(rows[-1]["bound"]) == pytest.approx(lab.result.bounds[-1], rel=1e-6)
    assert float(rows[-1]["kl"]) == pytest.approx(lab.result.kl[-1], rel=1e-6)
    assert rows[0]["kl"] == "nan"


def test_transformer_rows_are_the_methods():
    lab = TransformerLab()
    rows = rows_of(lab, transformer_dashboard.result_table)
    assert [row["method"] for row in rows] == [answer.name for answer in lab.result.answers]


def test_the_download_button_serves_the_csv():
    lab = TransformerLab()
    card = export.export_card(lab, "result.csv", transformer_dashboard.result_table)
    (download,) = [obj for obj in card if hasattr(obj, "callback")]
    text = download.callback().read().decode()
    assert text.startswith("method,milliseconds,kl_exact_q")
    assert text.count("\n") == 1 + len(lab.result.answers)


def test_columns_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="different lengths"):
        export.csv_bytes({"a": np.zeros(3), "b": np.zeros(4)})
