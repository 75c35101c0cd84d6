"""The jupyter-server-proxy entry point and the Binder links, without starting a server.

tests/ui/test_binder.py runs the same entry point for real, in a fresh environment built
from binder/, behind a Jupyter server and a browser.
"""

import importlib.metadata
import pathlib
import tomllib
import xml.etree.ElementTree as ElementTree
from urllib.parse import parse_qs, urlsplit

import pytest

from posteriorlab import cli, jupyter_proxy

ROOT = pathlib.Path(__file__).resolve().parents[1]


def rendered(value, port, base_url):
    """A command or header template as jupyter-server-proxy fills it in (``str.format``)."""
    if isinstance(value, dict):
        return {key: rendered(item, port, base_url) for key, item in value.items()}
    if isinstance(value, list):
        return [rendered(item, port, base_url) for item in value]
    return value.format(port=port, base_url=base_url, unix_socket="")


def binderhub_redirect(link: str, server_url: str, token: str) -> str:
    """Where BinderHub sends the browser once the server runs (getFullRedirectURL of its
    JavaScript client): the decoded ``urlpath`` appended to the server's URL, then the
    token added to the query."""
    (urlpath,) = parse_qs(urlsplit(link).query)["urlpath"]
    url = server_url.rstrip("/") + "/" + urlpath.lstrip("/")
    return url + ("&" if "?" in url else "?") + f"token={token}"


def test_the_entry_point_is_declared_in_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    value = project["entry-points"]["jupyter_serverproxy_servers"][jupyter_proxy.NAME]
    entry = importlib.metadata.EntryPoint(
        jupyter_proxy.NAME, value, "jupyter_serverproxy_servers"
    )
    assert entry.load() is jupyter_proxy.server_process
    assert "jupyter-server-proxy" in " ".join(project["optional-dependencies"]["notebooks"])


def test_jupyter_server_proxy_accepts_the_entry():
    config = pytest.importorskip("jupyter_server_proxy.config")
    process = config.ServerProcess(name=jupyter_proxy.NAME, **jupyter_proxy.server_process())
    assert process.absolute_url  # the backend sees the public path, so --prefix matches it
    assert process.timeout >= 60  # the first start imports JAX and every lab
    assert process.launcher_entry.title == jupyter_proxy.NAME
    assert process.launcher_entry.path_info == jupyter_proxy.NAME + "/"


@pytest.mark.parametrize("base_url", ["/", "/user/ada/"])
def test_the_command_serves_below_the_proxied_path(base_url):
    entry = jupyter_proxy.server_process()
    command = rendered(entry["command"], 43117, base_url)
    assert command[1:3] == ["-m", "posteriorlab.cli"]
    args = cli.build_parser().parse_args(command[3:])
    assert args.command == "serve"
    assert args.port == 43117
    assert args.address == "localhost"  # reachable only through the Jupyter server
    assert args.prefix == base_url + jupyter_proxy.NAME  # what absolute_url forwards
    # The websocket's Origin, rewritten to the backend's own, is one `serve` always allows.
    origin = rendered(entry["request_headers_override"], 43117, base_url)["Origin"]
    assert urlsplit(origin).netloc == f"localhost:{args.port}"


def test_the_launcher_icon_is_an_svg_in_the_package():
    icon = pathlib.Path(jupyter_proxy.server_process()["launcher_entry"]["icon_path"])
    assert icon.is_file()
    assert icon.is_relative_to(ROOT / "src" / "posteriorlab")  # installed with the package
    assert ElementTree.parse(icon).getroot().tag == "{http://www.w3.org/2000/svg}svg"


@pytest.mark.parametrize(
    ("lab", "state"),
    [("smc", {"N": 1000, "seed": 3}), ("paths", {"schedule": "cosine", "steps": 20}), ("", {})],
)
def test_a_binder_link_opens_the_lab_in_its_state(lab, state):
    link = jupyter_proxy.binder_link("ada/posteriorlab", lab, ref="main", **state)
    assert link.startswith("https://mybinder.org/v2/gh/ada/posteriorlab/main?urlpath=")
    assert set(parse_qs(urlsplit(link).query)) == {"urlpath"}  # nothing leaked out of it

    opened = urlsplit(binderhub_redirect(link, "https://hub.example.org/user/ada-1x/", "t0k"))
    assert opened.path == f"/user/ada-1x/posteriorlab/{lab}"
    query = parse_qs(opened.query)
    assert query.pop("token") == ["t0k"]
    assert query == {name: [str(value)] for name, value in state.items()}


def test_lab_path_is_the_address_below_the_jupyter_base_url():
    assert jupyter_proxy.lab_path("smc", N=1000, seed=3) == "/posteriorlab/smc?N=1000&seed=3"
    assert jupyter_proxy.lab_path() == "/posteriorlab/"
