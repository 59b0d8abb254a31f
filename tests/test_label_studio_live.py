"""A real Label Studio (from the package registry) as a lab uses it, through its REST API.

The test session installs Label Studio into its own venv, `.venv-labelstudio/` at the
repository root (git-ignored, reused while it holds LABEL_STUDIO_VERSION), because README's
test command is all CI runs. The server binds 127.0.0.1 only, on a free port, with a generated
token, local-file serving on under a temporary document root, and no version check, analytics
or error reporting (Sentry; docs/labeling.md's start command sets the same variables). Every
proxy variable points at a recorder on 127.0.0.1, so any connection it tries beyond loopback
fails the test; it is stopped by its PID whatever happens.

One project serves the whole campaign: created from `export`'s config, one local-files
storage for every round, tasks imported, people's work simulated through the API (a skip, a
choice then Skip, a correction, a task left out), the JSON export imported as it is.
"""
from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from autoal_dist import labeling
from autoal_dist.cli import main
from autoal_dist.labeling import importer as label_import
from autoal_dist.run import Run
from test_bad_inputs import fails_cleanly, snapshot, write

LABEL_STUDIO_VERSION = "1.23.2"
VENV = Path(__file__).resolve().parent.parent / ".venv-labelstudio"
START_TIMEOUT_S = 300  # a fresh database runs Django's migrations first (~1 min on 2 cores)
# pip output that means the registry cannot serve the package (not a bug of ours)
UNREACHABLE = ("Could not find a version", "No matching distribution", "Failed to establish",
               "Temporary failure in name resolution", "Network is unreachable", "ReadTimeout")


def _installed_version() -> str | None:
    python = VENV / "bin" / "python"
    if not python.is_file():
        return None
    got = subprocess.run([str(python), "-c", "import importlib.metadata as m; "
                          "print(m.version('label-studio'))"], capture_output=True, text=True)
    return got.stdout.strip() if got.returncode == 0 else None


@pytest.fixture(scope="session")
def label_studio_bin() -> Path:
    """`label-studio` of LABEL_STUDIO_VERSION, installed from the registry when missing."""
    if _installed_version() != LABEL_STUDIO_VERSION:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        pip = subprocess.run([str(VENV / "bin" / "python"), "-m", "pip", "install", "-q",
                              f"label-studio=={LABEL_STUDIO_VERSION}"],
                             capture_output=True, text=True)
        if pip.returncode != 0:
            tail = (pip.stdout + pip.stderr).strip().splitlines()[-3:]
            if any(u in line for u in UNREACHABLE for line in tail):
                pytest.skip(f"package registry unreachable for label-studio=="
                            f"{LABEL_STUDIO_VERSION}: {' | '.join(tail)}")
            pytest.fail(f"pip install label-studio=={LABEL_STUDIO_VERSION} failed: "
                        + " | ".join(tail))
    return VENV / "bin" / "label-studio"


class LabelStudio:
    """A running server and the few API calls a lab's workflow needs."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token

    def request(self, method: str, path: str, body: object = None) -> bytes:
        req = urllib.request.Request(
            self.url + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.read()

    def call(self, method: str, path: str, body: object = None):
        data = self.request(method, path, body)
        return json.loads(data) if data else None

    def choose(self, task: int, choice: str | None, cancelled: bool = False) -> int:
        """An annotation as the labeling UI submits it (Submit, or Skip when `cancelled`)."""
        result = [] if choice is None else [{"from_name": "label", "to_name": "image",
                                             "type": "choices", "value": {"choices": [choice]}}]
        return self.call("POST", f"/api/tasks/{task}/annotations",
                         {"result": result, "was_cancelled": cancelled})["id"]

    def correct(self, annotation: int, choice: str) -> None:
        """Update a submitted annotation, as a reviewer does."""
        self.call("PATCH", f"/api/annotations/{annotation}", {"result": [
            {"from_name": "label", "to_name": "image", "type": "choices",
             "value": {"choices": [choice]}}]})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# What keeps a labeling server silent: Label Studio's error reporting (Sentry, backend and
# browser) and analytics off (docs/labeling.md's start command sets the same).
SILENT = {"SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "", "COLLECT_ANALYTICS": "false",
          "LABEL_STUDIO_COLLECT_ANALYTICS": "false", "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
          "LABEL_STUDIO_CONVERTER_DOWNLOAD_RESOURCES": "false"}


class Recorder:
    """A TCP listener on 127.0.0.1 that records every connection (and closes it): set as
    every proxy of the server, it sees each request the server tries to send off the machine."""

    def __init__(self) -> None:
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.seen: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.seen.append(conn.recv(200))
                except OSError:
                    self.seen.append(b"")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def lab(label_studio_bin, tmp_path_factory):
    """(server, document root): Label Studio on 127.0.0.1 serving local files under the root."""
    root = tmp_path_factory.mktemp("lab")
    data_dir, token, port = tmp_path_factory.mktemp("ls-data"), secrets.token_hex(20), _free_port()
    recorder = Recorder()
    proxy = f"http://127.0.0.1:{recorder.port}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("LABEL_STUDIO_", "SENTRY")) and "proxy" not in k.lower()}
    env.update(SILENT, LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
               LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(root),
               LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN="true",
               **{k: proxy for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy",
                                     "https_proxy", "all_proxy")},
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    log = open(data_dir / "server.log", "wb")
    proc = subprocess.Popen(
        [str(label_studio_bin), "start", "--data-dir", str(data_dir), "--no-browser",
         "--internal-host", "127.0.0.1", "--port", str(port), "--username", "lab@example.com",
         "--password", secrets.token_hex(8), "--user-token", token, "--enable-legacy-api-token"],
        env=env, cwd=data_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        server = LabelStudio(f"http://127.0.0.1:{port}", token)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, (data_dir / "server.log").read_text()[-3000:]
            try:
                server.request("GET", "/api/projects")
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert time.monotonic() < deadline, "Label Studio did not answer in time"
                time.sleep(2)
        yield server, root
        assert not recorder.seen, ("Label Studio tried to reach the network through the proxy: "
                                   + repr(recorder.seen[:3]))
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        recorder.close()


def _printed_export(out: str) -> list[str]:
    """The export command `run` printed, as argv for main()."""
    line = next(line for line in out.splitlines() if line.strip().startswith("autoal-dist export"))
    return shlex.split(line)[1:]


def _export_json(server: LabelStudio, project: int, path: Path) -> str:
    """Export > JSON, every task (skipped and unannotated ones too)."""
    path.write_bytes(server.request(
        "GET", f"/api/projects/{project}/export?exportType=JSON&download_all_tasks=true"))
    return str(path)


def _import_round(server: LabelStudio, project: int, export_dir: Path) -> dict[int, int]:
    """Import the round's tasks; returns pool id -> Label Studio task id of the new tasks."""
    before = {t["id"] for t in _tasks(server, project)}
    server.call("POST", f"/api/projects/{project}/import",
                json.loads((export_dir / "label_studio_tasks.json").read_text()))
    return {t["data"]["id"]: t["id"] for t in _tasks(server, project) if t["id"] not in before}


def _tasks(server: LabelStudio, project: int) -> list[dict]:
    return server.call("GET", f"/api/tasks?project={project}&page_size=1000")["tasks"]


def _serves_png(server: LabelStudio, export_dir: Path, task: dict) -> bool:
    png = server.request("GET", task["data"]["image"])
    return png == (export_dir / "images" / f"{task['data']['id']}.png").read_bytes()


def _recorded(run: Path) -> dict[int, int]:
    t = labeling.read_labels(Run.at(run))
    return dict(zip(t.column("id").to_pylist(), t.column("label").to_pylist()))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_campaign_labeled_in_one_label_studio_project(lab, tmp_path, capsys):
    server, root = lab
    run = root / "cells"  # README's layout: the document root holds the run and cells-export/
    fast = write(tmp_path, "fast.yaml", "train: {min_steps: 5}\nscore: {mc_samples: 2}\n")
    assert main(["run", "--local", "--quiet", "--init", "10", "--budget", "4", "--rounds", "1",
                 "--epochs", "1", "--strategy", "margin", "--seed", "3", "--config", fast,
                 "--oracle", "files", "--out", str(run)]) == 0
    assert main(_printed_export(capsys.readouterr().out)) == 0
    round0 = root / "cells-export" / "round_000"
    assert f"local-files storage path {root / 'cells-export'}" in capsys.readouterr().out

    project = server.call("POST", "/api/projects", {
        "title": "cells campaign",
        "label_config": (round0 / "label_studio_config.xml").read_text()})["id"]
    server.call("POST", "/api/storages/localfiles", {  # one storage for every round
        "project": project, "title": "cells exports", "path": str(root / "cells-export"),
        "use_blob_urls": False})
    task_of = _import_round(server, project, round0)
    assert all(_serves_png(server, round0, t) for t in _tasks(server, project)[:2])

    ids = list(task_of)
    a, fixed, skipped, cancelled, left_out, *rest = ids
    chosen = {a: 1, fixed: 4} | {i: (i * 7) % 10 for i in rest}  # people's choices, any class
    wrong = server.choose(task_of[fixed], "9")
    for i, y in chosen.items():
        if i != fixed:
            server.choose(task_of[i], str(y))
    server.correct(wrong, "4")
    server.choose(task_of[skipped], None, cancelled=True)  # Skip
    server.choose(task_of[cancelled], "7", cancelled=True)  # a choice, then Skip

    e1 = _export_json(server, project, tmp_path / "export-1.json")
    assert main(["import", str(run), "--labels", e1]) == 0
    out = capsys.readouterr().out
    assert "10 tasks, 7 labeled, 2 skipped, 1 without a choice" in out, out
    assert _recorded(run) == chosen
    assert main(["run", "--resume", "--out", str(run), "--quiet"]) == 0  # stays --local
    assert "round 0 awaits labels: 7 of 10" in capsys.readouterr().out

    for i, y in ((skipped, 0), (cancelled, 5), (left_out, 6)):
        server.choose(task_of[i], str(y))
        chosen[i] = y
    assert main(["import", str(run), "--labels",
                 _export_json(server, project, tmp_path / "export-2.json")]) == 0
    assert "imported 3 new labels (7 were already recorded)" in capsys.readouterr().out
    assert main(["run", "--resume", "--out", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "round 1 awaits labels: 0 of 4" in out

    # round 1, same project, same storage
    assert main(_printed_export(out)) == 0
    round1 = root / "cells-export" / "round_001"
    task_of1 = _import_round(server, project, round1)
    new_tasks = [t for t in _tasks(server, project) if t["id"] in task_of1.values()]
    assert all(_serves_png(server, round1, t) and t["data"]["round"] == 1 for t in new_tasks)
    for i, task in task_of1.items():
        chosen[i] = (i * 3) % 10
        server.choose(task, str(chosen[i]))
    server.correct(server.call("GET", f"/api/tasks/{task_of[a]}/annotations")[0]["id"], "8")

    e3 = _export_json(server, project, tmp_path / "export-3.json")
    assert main(["import", str(run), "--labels", e3]) == 0  # round 0's tasks ignored
    assert "10 of rounds already labeled ignored (1 differ" in capsys.readouterr().out
    assert _recorded(run) == chosen
    assert main(["import", str(run), "--labels", e3, "--relabel"]) == 0
    chosen[a] = 8
    history = label_import.read_history(Run.at(run))
    assert history.select(["id", "old_label", "new_label", "trained_through",
                           "source"]).to_pylist() == \
        [{"id": a, "old_label": 1, "new_label": 8, "trained_through": 0, "source": e3}]
    assert main(["run", "--resume", "--out", str(run), "--quiet"]) == 0
    assert pq.read_table(run / "metrics.parquet").column("round").to_pylist() == [0, 1]
    assert (run / "summary.md").is_file()

    assert _recorded(run) == chosen  # the labels chosen, nothing else
    assert sorted(chosen) == Run.at(run).labeled_ids().tolist()

    # the export of a project made from another labeling config: refused, nothing recorded
    other = server.call("POST", "/api/projects", {"title": "another project", "label_config": (
        '<View><Image name="image" value="$image"/><Choices name="animal" toName="image">'
        '<Choice value="cat"/><Choice value="dog"/></Choices></View>')})["id"]
    task = next(iter(_import_round(server, other, round1).values()))
    server.call("POST", f"/api/tasks/{task}/annotations", {"result": [
        {"from_name": "animal", "to_name": "image", "type": "choices",
         "value": {"choices": ["cat"]}}]})
    before = snapshot(run)
    fails_cleanly(capsys, ["import", str(run), "--labels",
                           _export_json(server, other, tmp_path / "other.json")], "'animal'")
    assert snapshot(run) == before
