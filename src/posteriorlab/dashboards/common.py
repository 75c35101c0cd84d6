"""Pieces every lab page shares."""

import panel as pn


def error_alert(lab, name: str = "error") -> pn.pane.Alert:
    """A red alert showing ``lab.error``, visible only while there is one.

    Labs validate their input and put what is wrong (and the fix) in ``error`` instead
    of raising, keeping their last good result; this is where the student reads it.
    """
    return pn.pane.Alert(
        pn.bind(lambda message: f"**Input problem:** {message}", lab.param.error),
        alert_type="danger",
        visible=pn.bind(bool, lab.param.error),
        sizing_mode="stretch_width",
        name=name,
    )
