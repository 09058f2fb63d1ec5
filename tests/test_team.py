"""Working with a team (README): a DVC remote on S3 and experiments shared through git, run as
the README says between two clones, against real servers on 127.0.0.1 that start and stop here:
moto's S3 server (as DVC's own tests use) and a bare git repository on disk as `origin`.

Clone A is a committed workspace that ran the pipeline on tiny data; clone B is a teammate's
`git clone` of origin. Tests build on each other in file order, as a team's day does.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

# boto3, dvc_s3, moto, werkzeug: the `dev` extra installs them; one missing fails, never skips.
import boto3
import dvc_s3  # noqa: F401  (DVC finds the S3 remote through it)
import pytest
import readme
import yaml
from moto.moto_server import werkzeug_app as moto_app
from usershell import IMPROVED, md5, ran, sh, user_env
from werkzeug import serving

pytestmark = pytest.mark.e2e

SECTION = "Working with a team"
EARLY = "early"  # the experiment made before the remote
IMPROVED_PT = "models/improved.pt"
BUCKET = "team"
UP_TO_DATE = "Data and pipelines are up to date."
DVC_FOOTER = "Having any troubles? Hit us up at https://dvc.org/support"


class QuietHandler(moto_app.MotoRequestHandler):
    def log_request(self, *args: Any) -> None:
        """No line per request on the test's output."""


class S3Server:
    """moto's S3 on a free port of 127.0.0.1, in this process (all such servers share moto's
    storage). With `cut_after=n` it serves n uploads, then holds every request without serving
    it until `stop()`: a link that went dead half-way, which nothing sent later gets through."""

    def __init__(self, cut_after: float = math.inf) -> None:
        self.app = moto_app.DomainDispatcherApplication(moto_app.create_backend_app)
        self.server = serving.make_server(
            "127.0.0.1", 0, self, threaded=True, request_handler=QuietHandler
        )
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.cut_after, self.uploads_left, self.uploaded = cut_after, cut_after, 0
        self.changed, self.stopped = threading.Condition(), threading.Event()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:  # WSGI
        upload = environ["REQUEST_METHOD"] == "PUT"
        with self.changed:
            self.uploads_left -= upload
            cut = self.uploads_left < 0
            self.changed.notify_all()
        if cut:
            self.stopped.wait(timeout=120)
            start_response("503 Service Unavailable", [("Content-Length", "0")])
            return [b""]
        response = self.app(environ, start_response)
        with self.changed:
            self.uploaded += upload
            self.changed.notify_all()
        return response

    def wait_for_cut(self, timeout: float) -> bool:
        """True once a request was held and the uploads served before it have all landed."""
        with self.changed:
            return self.changed.wait_for(
                lambda: self.uploads_left < 0 and self.uploaded >= self.cut_after, timeout
            )

    def stop(self) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()

    def authenticate(self, on: bool) -> None:
        """Turn moto's IAM checks on (only known access keys get in) or off (any key does)."""
        request = urllib.request.Request(
            f"{self.url}/moto-api/reset-auth",
            data=b"0" if on else b"inf",
            headers={"Content-Type": "application/octet-stream"},
        )
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request).close()

    def client(self, service: str) -> Any:  # a boto3 client
        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1")

    def keys(self, prefix: str) -> set[str]:
        listed = self.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/")
        return {item["Key"][len(prefix) + 1 :] for item in listed.get("Contents", [])}


@pytest.fixture(scope="module", autouse=True)
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Credentials the standard way, AWS's environment variables; nothing from this machine's
    own AWS files or proxies."""
    empty = tmp_path_factory.mktemp("aws") / "empty"
    empty.touch()
    with pytest.MonkeyPatch.context() as mp:
        for name in [k for k in os.environ if k.lower().endswith("_proxy")]:
            mp.delenv(name)
        for name, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(empty),
            "AWS_SHARED_CREDENTIALS_FILE": str(empty),
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            mp.setenv(name, value)
        yield


@pytest.fixture(scope="module")
def s3(aws_env: None) -> Iterator[S3Server]:
    server = S3Server()
    server.client("s3").create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory, made: dict) -> dict[str, Path]:
    """Clone A (a run committed and pushed to origin, and an experiment `early` made before
    any remote existed, its workspace left as committed) and B, a teammate's clone of origin.
    A starts as a copy of the demo's workspace that `make demo` made (conftest's `made`)."""
    root = tmp_path_factory.mktemp("team")
    a, origin, b = root / "A", root / "origin.git", root / "B"
    shutil.copytree(made["clone"] / ".demo", a, symlinks=True)
    assert ran(sh(f"dvc exp run --temp -n {EARLY} -S model.hidden=10", a).stdout) == IMPROVED
    sh(f"git init -q --bare {origin}", root)
    sh(f"git remote add origin {origin} && git push -q -u origin HEAD", a)
    sh(f"git clone -q {origin} {b}", root)
    return {"A": a, "B": b, "origin": origin}


def snapshot(repo: Path) -> dict[str, str]:
    """md5 of each file of a clone (the workspace and the DVC cache) but git's and DVC's own
    bookkeeping (.git, .dvc/tmp) and the local config that the tests edit."""
    skip = {".git", ".dvc/tmp", ".dvc/config.local"}
    return {
        str(path.relative_to(repo)): md5(path)
        for path in sorted(repo.rglob("*"))
        if path.is_file() and not any(str(path.relative_to(repo)).startswith(s) for s in skip)
    }


def workspace_files(repo: Path) -> dict[str, str]:
    """What a run leaves, less DVC's own folder and the page `dvc plots show` wrote (made on
    demand, gitignored, shared by neither git nor DVC)."""
    skipped = (".dvc/", "dvc_plots/")
    return {name: h for name, h in snapshot(repo).items() if not name.startswith(skipped)}


def errors(done: subprocess.CompletedProcess[str]) -> list[str]:
    """What a failed dvc command printed, but blank lines and the support footer DVC adds."""
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    return [line for line in lines if line.strip() and not line.startswith(DVC_FOOTER)]


def free_port() -> int:
    """A loopback port with nothing listening on it: a server that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def add_remote(repo: Path, name: str, url: str, endpoint: str) -> None:
    """A remote of this test's own, in .dvc/config.local (what `dvc remote add --local` and
    `dvc remote modify --local` write, without two more dvc starts): the committed config stays."""
    with (repo / ".dvc" / "config.local").open("a") as config:
        config.write(f"['remote \"{name}\"']\n    url = {url}\n    endpointurl = {endpoint}\n")


# --- The README's section, run as written --------------------------------------------------


def test_a_teammate_pulls_a_run_without_computing_it(team: dict[str, Path], s3: S3Server) -> None:
    a, b = team["A"], team["B"]
    setup = readme.block(SECTION, 0)
    assert "s3://my-bucket/skeleton" in setup[0] and "https://minio.example.com" in setup[1]
    for clone in (a, b):  # "every clone names the remote once"
        for command in setup:  # with our bucket and endpoint for the README's placeholders
            sh(
                command.replace("my-bucket", BUCKET).replace("https://minio.example.com", s3.url),
                clone,
            )
    push, pull = readme.block(SECTION, 1)[:2]
    assert re.search(r"\d+ files pushed", sh(push, a).stdout)
    assert s3.keys("skeleton") and not (b / "models" / "improved.pt").exists()

    out = sh(pull, b).stdout
    assert ran(out) == set() and workspace_files(b) == workspace_files(a)
    assert {
        "data/raw/synthetic_2d.pkl",
        "data/shards/manifest.json",
        "models/improved.pt",
        "metrics/summary.json",
    } <= set(workspace_files(b))
    repro = sh("dvc repro", b).stdout
    assert ran(repro) == set() and UP_TO_DATE in repro
    assert sh("dvc status", b).stdout.strip() == UP_TO_DATE


# --- Bad remotes: one line, nothing local changed --------------------------------------------


@pytest.mark.parametrize(
    ("case", "url", "expected"),
    [
        ("down", "s3://team/down", 'Could not connect to the endpoint URL: "http://127.0.0.1:'),
        ("missing", "s3://no-such-bucket/x", "The specified bucket does not exist"),
    ],
    ids=["server down", "bucket missing"],
)
def test_a_bad_remote_gives_one_line_and_keeps_local_data(
    team: dict[str, Path], s3: S3Server, case: str, url: str, expected: str
) -> None:
    b = team["B"]
    add_remote(b, case, url, f"http://127.0.0.1:{free_port()}" if case == "down" else s3.url)
    before = snapshot(b)
    # One attempt per request (AWS_MAX_ATTEMPTS, a user's setting too): a server that is down
    # fails the same way, without botocore's retries taking seconds.
    retries = "AWS_MAX_ATTEMPTS=1 " if case == "down" else ""
    (line,) = errors(sh(f"{retries}dvc push -r {case}", b, ok=False))
    assert line.startswith("ERROR: ") and expected in line
    assert snapshot(b) == before
    if case == "down":  # a pull from it too: it says why and deletes nothing
        assert expected in errors(sh(f"{retries}dvc pull -r {case}", b, ok=False))[0]
        assert snapshot(b) == before


def test_wrong_credentials_then_the_right_ones_in_config_local(
    team: dict[str, Path], s3: S3Server
) -> None:
    b = team["B"]
    iam = s3.client("iam")
    iam.create_user(UserName="teammate")
    allow_all = {"Effect": "Allow", "Action": "*", "Resource": "*"}
    iam.put_user_policy(
        UserName="teammate",
        PolicyName="all",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [allow_all]}),
    )
    key = iam.create_access_key(UserName="teammate")["AccessKey"]
    before, config = snapshot(b), (b / ".dvc" / "config.local").read_text()
    s3.authenticate(True)
    try:
        (line,) = errors(sh("dvc push", b, ok=False))  # the environment's key is unknown
        assert line.startswith("ERROR: ") and "Forbidden" in line and snapshot(b) == before
        sh(f"dvc remote modify --local storage access_key_id {key['AccessKeyId']}", b)
        sh(f"dvc remote modify --local storage secret_access_key {key['SecretAccessKey']}", b)
        assert "Everything is up to date" in sh("dvc push", b).stdout
    finally:
        s3.authenticate(False)
        (b / ".dvc" / "config.local").write_text(config)  # the README's remote, no keys
    assert snapshot(b) == before and sh("git status --porcelain", b).stdout == ""


def test_an_interrupted_push_resumes(team: dict[str, Path], s3: S3Server, tmp_path: Path) -> None:
    b = team["B"]
    cut = S3Server(cut_after=3)
    add_remote(b, "half", f"s3://{BUCKET}/half", cut.url)
    before = snapshot(b)
    push = subprocess.Popen(
        ["bash", "-c", "dvc push -r half"],
        cwd=b,
        env=user_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert cut.wait_for_cut(timeout=60), "the push never reached its fourth upload"
        os.killpg(push.pid, signal.SIGKILL)
    finally:
        push.wait(timeout=60)
        cut.stop()
    assert push.returncode == -signal.SIGKILL
    everything = s3.keys("skeleton")  # what the complete push of the same run holds
    assert len(s3.keys("half")) == 3 < len(everything) and snapshot(b) == before

    sh(f"dvc remote modify --local half endpointurl {s3.url}", b)  # the server is back
    resumed = sh("dvc push -r half", b).stdout
    assert f"{len(everything) - 3} files pushed" in resumed  # only what was missing
    assert s3.keys("half") == everything and snapshot(b) == before
    clean = tmp_path / "C"  # a clean clone gets the whole run from it
    sh(f"git clone -q {team['origin']} {clean}", tmp_path)
    add_remote(clean, "half", f"s3://{BUCKET}/half", s3.url)
    sh("dvc pull -r half", clean)
    assert workspace_files(clean) == workspace_files(b)


# --- Experiments, through origin and the remote ---------------------------------------------


def exp_commands(name: str) -> list[str]:
    """The README's exp push, exp pull and exp apply, for experiment `name`."""
    return [c.replace("my-exp", name) for c in readme.block(SECTION, 1)[2:]]


def cached(repo: Path, md5_hash: str) -> Path:
    return repo / ".dvc" / "cache" / "files" / "md5" / md5_hash[:2] / md5_hash[2:]


def test_an_experiment_made_before_the_remote_travels(team: dict[str, Path]) -> None:
    """`early` was run before any remote was configured: its commit names none, so only the
    clones' own config can tell exp push and exp pull where its outputs go."""
    a, b = team["A"], team["B"]
    refs = sh("git for-each-ref --format='%(refname)' refs/exps", a).stdout.split()
    (ref,) = (r for r in refs if r.endswith(f"/{EARLY}"))
    lock = yaml.safe_load(sh(f"git show {ref}:dvc.lock", a).stdout)
    (model,) = (
        out["md5"] for out in lock["stages"]["train@improved"]["outs"] if out["path"] == IMPROVED_PT
    )
    exp_push, exp_pull, apply = exp_commands(EARLY)
    assert EARLY in sh(exp_push, a).stdout
    assert not cached(b, model).exists()
    outputs = [sh(exp_pull, b).stdout]
    assert cached(b, model).exists()  # its model came from the DVC remote
    outputs.append(sh(apply, b).stdout)
    assert md5(b / "models" / "improved.pt") == model
    assert yaml.safe_load((b / "params.yaml").read_text())["model"]["hidden"] == 10
    assert sh("git status --porcelain .dvc", b).stdout == ""  # the remote is still named
    assert sh("dvc status", b).stdout.strip() == UP_TO_DATE
    outputs.append(sh("dvc repro", b).stdout)
    assert not any(ran(output) for output in outputs) and UP_TO_DATE in outputs[-1]
    sh("git checkout -- . && dvc checkout -q", b)  # back to the last commit for the next test


def test_a_teammate_applies_an_experiment_without_retraining(team: dict[str, Path]) -> None:
    a, b = team["A"], team["B"]
    out = sh("dvc exp run -S model.hidden=12", a).stdout
    assert ran(out) == IMPROVED
    name = re.search(r"Ran experiment\(s\): (\S+)", out).group(1)
    model = md5(a / "models" / "improved.pt")
    exp_push, exp_pull, apply = exp_commands(name)

    assert name in sh(exp_push, a).stdout
    assert not cached(b, model).exists()
    outputs = [sh(exp_pull, b).stdout]
    assert cached(b, model).exists()  # exp pull brought its model from the DVC remote
    outputs.append(sh(apply, b).stdout)
    assert md5(b / "models" / "improved.pt") == model
    params = yaml.safe_load((b / "params.yaml").read_text())
    assert params["model"]["hidden"] == 12
    assert workspace_files(b) == workspace_files(a)  # metrics, curves and the lock as A's
    outputs.append(sh("dvc repro", b).stdout)
    assert not any(ran(output) for output in outputs) and UP_TO_DATE in outputs[-1]
