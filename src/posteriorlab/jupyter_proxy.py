"""The labs inside a Jupyter server: the jupyter-server-proxy entry point, and Binder links.

With ``jupyter-server-proxy`` installed (the ``notebooks`` extra), every Jupyter server in
this environment (``jupyter lab`` on a laptop, a JupyterHub or Binder session) serves the
labs at ``{base_url}posteriorlab/``. The first request there starts ``posteriorlab serve``
on a free port of the same machine, waits until it answers, and from then on forwards
HTTP and the websocket to it, behind Jupyter's own login. JupyterLab's launcher gets a
*posteriorlab* tile that opens the landing page in a new browser tab.

How an address travels, for a Jupyter server with ``base_url = /user/ada/``::

    browser   https://hub.example.org/user/ada/posteriorlab/smc?N=1000&seed=3
    Jupyter   checks the login, matches {base_url}posteriorlab/..., forwards the request
              with its *whole* path (``absolute_url``) and its query unchanged
    backend   http://localhost:PORT/user/ada/posteriorlab/smc?N=1000&seed=3, served by
              ``posteriorlab serve --prefix /user/ada/posteriorlab``

Since the backend knows the public prefix, every address Bokeh writes into a page (its
scripts, the page's websocket ``.../smc/ws``) leads back through the proxy. The browser
sends the websocket request with Jupyter's host as its ``Origin``, which Bokeh does not
know (and with Tornado before 6.6 refuses: it checks the ``Origin`` against its allowlist
alone). Jupyter has checked that ``Origin`` already, so the proxy presents the backend's
own origin instead, which ``posteriorlab serve`` always allows: no need to allow them all.

Binder
------
A Binder link names a repository, a ref and ``urlpath``, the address to open once the
server runs, relative to the server's base URL. BinderHub decodes ``urlpath`` as one
query value, then appends it to the server's URL and adds the login token to its query.
So the lab's own query is percent-encoded (``?`` as ``%3F``, ``=`` as ``%3D``, ``&`` as
``%26``): an ``&`` left as it is would end Binder's value, and ``seed=3`` would become a
parameter of Binder's own, lost to the lab::

    https://mybinder.org/v2/gh/OWNER/REPO/HEAD?urlpath=/posteriorlab/smc%3FN%3D1000%26seed%3D3
    -> {server}/posteriorlab/smc?N=1000&seed=3&token=...

:func:`binder_link` writes such links.
"""

import pathlib
import sys
from urllib.parse import quote, urlencode

NAME = "posteriorlab"
ICON = pathlib.Path(__file__).with_name("posteriorlab-icon.svg")
# Seconds to wait for a new server to answer HTTP: it first imports JAX, Panel and every
# lab (3 to 8 s on a busy 2-core machine, longer on a small shared one); the compiling of
# the labs' programs goes on in the background after that.
START_TIMEOUT_S = 300.0


def server_process() -> dict:
    """The jupyter-server-proxy server-process entry for ``posteriorlab serve``.

    jupyter-server-proxy replaces ``{port}`` by the free port it chose and ``{base_url}``
    by the Jupyter server's base URL (it starts and ends with ``/``) in the command and
    in the request headers. The command runs with the Jupyter server's own Python, the
    environment this package is installed in.
    """
    return {
        "command": [
            sys.executable, "-m", "posteriorlab.cli", "serve",
            "--port", "{port}",
            "--prefix", "{base_url}" + NAME,
            "--address", "localhost",
        ],  # fmt: skip
        "absolute_url": True,
        "request_headers_override": {"Origin": "http://localhost:{port}"},
        "timeout": START_TIMEOUT_S,
        "launcher_entry": {"title": NAME, "icon_path": str(ICON)},
    }


def lab_path(lab: str = "", **state) -> str:
    """The address of a lab below the Jupyter base URL, with its state as the query.

    ``lab_path("smc", N=1000, seed=3)`` is ``"/posteriorlab/smc?N=1000&seed=3"``; the
    names are those the lab's page reads from its address (``/smc?N=...``).
    """
    query = f"?{urlencode(state)}" if state else ""
    return f"/{NAME}/{lab}{query}"


def binder_link(
    repository: str,
    lab: str = "",
    *,
    ref: str = "HEAD",
    binder: str = "https://mybinder.org",
    **state,
) -> str:
    """A Binder link that builds ``repository`` (``owner/name`` on GitHub) at ``ref`` and
    opens ``lab`` in the given state.

    >>> binder_link("ada/posteriorlab", "smc", N=1000, seed=3)
    'https://mybinder.org/v2/gh/ada/posteriorlab/HEAD?urlpath=/posteriorlab/smc%3FN%3D1000%26seed%3D3'
    """
    urlpath = quote(lab_path(lab, **state), safe="/")
    return f"{binder.rstrip('/')}/v2/gh/{repository}/{ref}?urlpath={urlpath}"
