"""Share and export: the current result as a CSV file, and a link that reproduces the view.

Every lab page ends its sidebar with :func:`export_card`. The CSV is built when the button
is pressed, from the lab's result at that moment, by the lab's ``table`` function: a
mapping of column names to equally long 1-D arrays. Figures are saved as PNG with the
save tool of each figure's toolbar. The link is the page's address, which holds every
setting (see ``dashboards.app``).
"""

import csv
import io

import numpy as np
import panel as pn

__all__ = ["csv_bytes", "export_card"]

# The clipboard needs a secure page (https or localhost); elsewhere show the link to copy.
# A Jupyter server behind the page (Binder, a JupyterHub) may have put its login token in
# the address: it is the key to the student's whole server, so it never goes in the link.
COPY_LINK = """
const url = new URL(window.location.href);
url.searchParams.delete("token");
const link = url.toString();
if (navigator.clipboard && window.isSecureContext) {
  navigator.clipboard.writeText(link);
} else {
  window.prompt("Copy this link to share the view:", link);
}
"""


def csv_bytes(columns: dict) -> bytes:
    """``columns`` (name → 1-D array, all the same length) as CSV text, one row per index."""
    arrays = {name: np.asarray(values).reshape(-1) for name, values in columns.items()}
    lengths = {name: values.size for name, values in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"columns of different lengths cannot share rows: {lengths}")
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(arrays)
    writer.writerows(zip(*(values.tolist() for values in arrays.values()), strict=True))
    return text.getvalue().encode()


def export_card(lab, filename: str, table) -> pn.Card:
    """A card with a CSV download of ``table(lab.result)`` and a copy-link button."""

    def download():
        return io.BytesIO(csv_bytes(table(lab.result)) if lab.result is not None else b"")

    copy = pn.widgets.Button(label="Copy a link to this view", sizing_mode="stretch_width")
    copy.js_on_click(code=COPY_LINK)
    return pn.Card(
        pn.widgets.FileDownload(
            callback=download, filename=filename, label="Download the result (CSV)",
            sizing_mode="stretch_width",
        ),  # fmt: skip
        copy,
        pn.pane.Markdown(
            "Figures: the save tool in each figure's toolbar writes a PNG.",
            sizing_mode="stretch_width",
        ),
        title="Share and export",
        sizing_mode="stretch_width",
    )
