"""Archives on object storage: `trajkit push` to a real S3-compatible server on 127.0.0.1, and every read path
(`open_archive`, `trajkit validate`, `trajkit analyze`, ensemble discovery) from ``s3://`` URLs.

The server is moto in server mode (``python -m moto.server``), started by the fixture on a free loopback port
and killed at teardown; s3fs finds it through ``AWS_ENDPOINT_URL`` and fake credentials set with monkeypatch,
and the real AWS configuration files are pointed away, so nothing here can reach AWS. Results read from S3
must equal the local-disk results exactly: the bytes are the same, and so is the arithmetic.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import trajkit
from trajkit import synthetic
from trajkit.archive import create, open_archive, validate
from trajkit.archive.push import archive_files, push
from trajkit.cli import cli
from trajkit.errors import ArchiveError
from trajkit.testing import params_chunk

s3fs = pytest.importorskip("s3fs", reason="s3fs is needed for the S3 tests (pip install 'trajkit[s3]')")
pytest.importorskip("moto.server", reason="moto[server] is needed to run a loopback S3 server")

SERVER_START_TIMEOUT_S = 60
CHILD_TIMEOUT_S = 60
#: uploads the interrupted push makes before it is killed (of the ~160 objects of its archive)
KILL_AFTER = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 (its endpoint URL), killed at the end of the module."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"moto server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto server did not answer on {endpoint} within {SERVER_START_TIMEOUT_S} s")
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _aws_env(monkeypatch, tmp_path, endpoint: str | None, credentials: bool = True, fresh: bool = False) -> None:
    """Point the AWS environment at ``endpoint`` (fake credentials, or none); ``fresh`` drops s3fs's cached
    clients, which keep the credentials they were made with."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN",
                "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    if credentials:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    else:
        monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    if fresh:
        s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def bucket(s3_server, monkeypatch, tmp_path):
    """A fresh bucket on the loopback server, with the AWS environment pointing at it."""
    _aws_env(monkeypatch, tmp_path, s3_server)
    name = f"trajkit-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem().mkdir(name)
    return name


def _objects(bucket: str) -> dict[str, int]:
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    return {k.removeprefix(f"{bucket}/"): v["size"] for k, v in fs.find(bucket, detail=True).items()}


def _run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _one_error_line(result, prefix: str = "trajkit: error: ") -> str:
    """The single line a failed command printed (``trajkit validate`` prints its problems without a prefix)."""
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(prefix), result.output
    return lines[0]


def _recorded(path) -> None:
    """A real recorded run: an MLP trained with SGD, 12 snapshots on a log schedule, a trace."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    X, y = torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
    with trajkit.Recorder(path, model, schedule=trajkit.schedules.log(1, 200, 11)) as rec:
        for k in range(201):
            loss = None
            if k:
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(X), y)
                loss.backward()
                opt.step()
            rec.step(k, loss=loss, lr=0.1)


def _same_result(a, b) -> None:
    assert a.arrays.keys() == b.arrays.keys()
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k], err_msg=k)
    assert a.scalars.keys() == b.scalars.keys()
    for k in a.scalars:
        assert a.scalars[k] == b.scalars[k] or (np.isnan(a.scalars[k]) and np.isnan(b.scalars[k])), k


def test_a_pushed_recording_reads_and_analyses_as_on_disk(bucket, tmp_path):
    local = tmp_path / "run.trajkit"
    _recorded(local)
    r = _run("push", str(local), f"s3://{bucket}/runs/")
    assert r.exit_code == 0, r.output
    url = f"s3://{bucket}/runs/run.trajkit"
    assert url in r.output and "0 already there" in r.output
    pushed = set(_objects(bucket))
    assert pushed == {f"runs/run.trajkit/{k}" for k in archive_files(local)}
    assert "runs/run.trajkit/.trajkit.lock" not in pushed

    disk, remote = open_archive(local), open_archive(url)
    assert remote.run_id == disk.run_id and remote.n_snapshots == disk.n_snapshots == 12
    np.testing.assert_array_equal(remote.params[:, :], disk.params[:, :])
    np.testing.assert_array_equal(remote.params[[3, 7], 5:40], disk.params[[3, 7], 5:40])
    np.testing.assert_array_equal(remote.params[:, remote.select("hidden")], disk.params[:, disk.select("hidden")])
    np.testing.assert_array_equal(remote.steps, disk.steps)
    np.testing.assert_array_equal(remote.trace["loss"], disk.trace["loss"])
    assert trajkit.archive.run_state(remote).state == "finished"

    _same_result(trajkit.analyze("overlaps", url, n_waiting_times=3, epsilon=0.05),
                 trajkit.analyze("overlaps", local, n_waiting_times=3, epsilon=0.05))

    info = _run("info", "--json", url)
    assert info.exit_code == 0 and json.loads(info.output)["run_id"] == disk.run_id, info.output
    v = _run("validate", url)
    assert v.exit_code == 0 and v.output.strip() == f"ok {url} (12 snapshots x {disk.n_params} parameters)"
    assert validate(url) == []


def test_an_ensemble_pushed_whole_is_discovered_and_analysed_from_its_prefix(bucket, tmp_path):
    steps = synthetic.two_time_steps([0, 4], max_lag=40, n_lags=8)
    ens = synthetic.brownian_ensemble(tmp_path / "ens", steps, 800, 0.01, replicas=4, seed=3)
    r = _run("push", str(ens), f"s3://{bucket}/ens/")
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in ens.glob("*.trajkit"))
    objects = _objects(bucket)
    assert "ens/ensemble.json" in objects
    for name in names:                    # ens/r.trajkit lands at s3://bucket/ens/r.trajkit, as aws s3 sync would
        assert f"ens/{name}/zarr.json" in objects
    prefix = f"s3://{bucket}/ens/"
    remote = trajkit.open_ensemble(prefix)
    assert remote.paths == [f"s3://{bucket}/ens/{n}" for n in names]
    assert remote.run_ids == trajkit.open_ensemble(ens).run_ids

    _same_result(trajkit.analyze("chi4", prefix, waiting_times=[0], epsilon=0.1, n_boot=20, seed=1),
                 trajkit.analyze("chi4", ens, waiting_times=[0], epsilon=0.1, n_boot=20, seed=1))
    a = _run("analyze", "--plugin", "overlaps", "-p", "waiting_times=0,4", "-p", "epsilon=0.1", "--json", prefix)
    b = _run("analyze", "--plugin", "overlaps", "-p", "waiting_times=0,4", "-p", "epsilon=0.1", "--json", str(ens))
    assert a.exit_code == b.exit_code == 0, a.output
    assert json.loads(a.output)["scalars"] == json.loads(b.output)["scalars"]
    assert json.loads(a.output)["provenance"]["inputs"] == remote.paths

    again = push(ens, prefix)             # everything is already there and identical
    assert again.uploaded == 0 and again.skipped == len(objects)


def test_multi_chunk_rows_are_read_as_byte_ranges(bucket, tmp_path, monkeypatch):
    rows = np.random.default_rng(5).standard_normal((6, 5000)).astype(np.float32)
    with create(tmp_path / "wide.trajkit", n_params=5000, chunk_bytes=4000) as w:   # 5 chunks of 1,000 columns
        for k in range(6):
            w.append(10 * k, rows[k])
    push(tmp_path / "wide.trajkit", f"s3://{bucket}/wide.trajkit")
    arch = open_archive(f"s3://{bucket}/wide.trajkit")
    assert arch.params.chunk_cols == 1000
    np.testing.assert_array_equal(arch.params[:, :], rows)
    np.testing.assert_array_equal(arch.params[[1, 4], 990:3100], rows[[1, 4], 990:3100])
    np.testing.assert_array_equal(arch.params[2, 4999], rows[2, 4999])

    # a column block is one batch of ranged requests: each (row, chunk) asks only for the bytes of its columns
    fs, calls = arch._group.store_path.store.fs, []
    real = fs._cat_ranges

    async def recording(paths, starts, ends, **kw):
        calls.append(sorted(zip([p.rsplit("/", 1)[1] for p in paths], starts, ends, strict=True)))
        return await real(paths, starts, ends, **kw)

    monkeypatch.setattr(fs, "_cat_ranges", recording)
    np.testing.assert_array_equal(arch.params.read_rows(np.arange(6), 990, 3100), rows[:, 990:3100])
    assert calls == [sorted((f"c.{r}.{j}", a, b) for r in range(6)
                            for j, a, b in ((0, 3960, 4000), (1, 0, 4000), (2, 0, 4000), (3, 0, 400)))]


@pytest.mark.slow                     # a CLI child process: it imports torch before it uploads
def test_an_interrupted_push_publishes_nothing_and_the_next_one_resumes(bucket, tmp_path):
    local = synthetic.write_archive(tmp_path / "long.trajkit", np.arange(0, 300, 2),
                                    np.random.default_rng(1).standard_normal((150, 16)))
    total = len(archive_files(local))
    url = f"s3://{bucket}/long.trajkit"
    cmd = [sys.executable, "-c", "from trajkit.cli import main; main()", "push", "-v", "--jobs", "1", str(local), url]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = 0
        deadline = time.monotonic() + CHILD_TIMEOUT_S
        while seen < KILL_AFTER and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            seen += line.startswith("upload: ")
        assert seen == KILL_AFTER, f"push printed {seen} uploads before it stopped: {child.stderr.read()}"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=CHILD_TIMEOUT_S)
    assert child.returncode == -signal.SIGKILL
    there = _objects(bucket)
    assert KILL_AFTER <= len(there) < total and "long.trajkit/zarr.json" not in there
    with pytest.raises(ArchiveError, match=r"no trajkit archive there \(no zarr.json\).*push did not finish"):
        open_archive(url)
    assert "no trajkit archive there" in _one_error_line(_run("validate", url), prefix=url)

    done = push(local, url)
    assert done.skipped == len(there) and done.uploaded == total - len(there)
    np.testing.assert_array_equal(open_archive(url).params[:, :], open_archive(local).params[:, :])


def test_a_corrupted_object_is_found_by_its_checksum_and_uploaded_again(bucket, tmp_path):
    local = synthetic.write_archive(tmp_path / "r.trajkit", np.arange(5), np.ones((5, 100)))
    url = f"s3://{bucket}/r.trajkit"
    first = push(local, url)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    key = f"{bucket}/r.trajkit/snapshots/params/{params_chunk(local, 2).name}"
    fs.pipe_file(key, np.full(100, 7.0, np.float32).tobytes())           # same size, other bytes
    assert open_archive(url).params[2, 0] == 7.0
    second = push(local, url)
    assert second.uploaded == 2 and second.skipped == first.uploaded - 2    # the chunk, then the root again
    np.testing.assert_array_equal(open_archive(url).params[:, :], np.ones((5, 100), np.float32))


def test_pushing_an_archive_that_does_not_validate_is_refused_and_uploads_nothing(bucket, tmp_path):
    local = synthetic.write_archive(tmp_path / "bad.trajkit", np.arange(4), np.ones((4, 50)))
    chunk = params_chunk(local, 2)
    chunk.write_bytes(chunk.read_bytes()[:40])                            # a torn write
    line = _one_error_line(_run("push", str(local), f"s3://{bucket}/bad.trajkit"))
    assert "bad.trajkit: does not validate, nothing pushed:" in line and "row 2 (step 2)" in line
    assert _objects(bucket) == {}


def test_a_destination_holding_another_run_is_refused(bucket, tmp_path):
    a = synthetic.write_archive(tmp_path / "a.trajkit", np.arange(3), np.zeros((3, 10)))
    b = synthetic.write_archive(tmp_path / "b.trajkit", np.arange(3), np.zeros((3, 10)))
    push(a, f"s3://{bucket}/x.trajkit")
    before = _objects(bucket)
    line = _one_error_line(_run("push", str(b), f"s3://{bucket}/x.trajkit"))
    assert "holds another archive" in line and "push to another prefix or delete it first" in line
    assert _objects(bucket) == before


def test_a_missing_bucket_is_named(bucket, tmp_path):
    local = synthetic.write_archive(tmp_path / "r.trajkit", np.arange(3), np.zeros((3, 10)))
    with pytest.raises(ArchiveError, match=r"s3://no-such-bucket-7/r.trajkit: bucket 'no-such-bucket-7' does not "
                                           r"exist; create it or fix the URL"):
        open_archive("s3://no-such-bucket-7/r.trajkit")
    line = _one_error_line(_run("push", str(local), "s3://no-such-bucket-7/runs/"))
    assert "bucket 'no-such-bucket-7' does not exist; create it first" in line
    assert "bucket 'no-such-bucket-7' does not exist" in _one_error_line(
        _run("analyze", "--plugin", "overlaps", "s3://no-such-bucket-7/ens/"))


def test_no_credentials_is_one_line_naming_the_fix(bucket, s3_server, monkeypatch, tmp_path):
    local = synthetic.write_archive(tmp_path / "r.trajkit", np.arange(3), np.zeros((3, 10)))
    push(local, f"s3://{bucket}/r.trajkit")
    _aws_env(monkeypatch, tmp_path, s3_server, credentials=False, fresh=True)
    for args, prefix in ((("validate", f"s3://{bucket}/r.trajkit"), f"s3://{bucket}/r.trajkit: "),
                         (("push", str(local), f"s3://{bucket}/s.trajkit"), "trajkit: error: "),
                         (("info", f"s3://{bucket}/r.trajkit"), "trajkit: error: ")):
        line = _one_error_line(_run(*args), prefix)
        assert "no credentials for the object store" in line and "AWS_ACCESS_KEY_ID" in line, line
    _aws_env(monkeypatch, tmp_path, s3_server, fresh=True)
    assert not any(k.startswith("s.trajkit/") for k in _objects(bucket))


def test_storage_options_replace_the_environment(bucket, s3_server, monkeypatch, tmp_path):
    local = synthetic.write_archive(tmp_path / "r.trajkit", np.arange(3), np.arange(30.0).reshape(3, 10))
    push(local, f"s3://{bucket}/r.trajkit")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    options = {"endpoint_url": s3_server, "key": "testing", "secret": "testing"}
    arch = open_archive(f"s3://{bucket}/r.trajkit", storage_options=options)
    np.testing.assert_array_equal(arch.params[:, :], np.arange(30.0, dtype=np.float32).reshape(3, 10))
    r = _run("validate", "--storage-options", json.dumps(options), f"s3://{bucket}/r.trajkit")
    assert r.exit_code == 0 and r.output.startswith("ok "), r.output
    line = _one_error_line(_run("validate", "--storage-options", "{endpoint", f"s3://{bucket}/r.trajkit"))
    assert "--storage-options '{endpoint': not valid JSON" in line


def test_push_needs_a_url_and_a_source_that_is_an_archive(tmp_path):
    (tmp_path / "empty").mkdir()
    line = _one_error_line(_run("push", str(tmp_path / "empty"), "s3://b/x/"))
    assert "neither an archive (no zarr.json) nor an ensemble directory" in line
    local = synthetic.write_archive(tmp_path / "r.trajkit", np.arange(3), np.zeros((3, 10)))
    assert "not a URL" in _one_error_line(_run("push", str(local), str(tmp_path / "copy")))
    assert not os.path.exists(tmp_path / "copy")


def test_any_fsspec_url_works_and_remote_damage_is_reported(tmp_path):
    """``memory://`` reports no MD5, so push verifies by reading back; a torn object is found by validate and
    by the reader, in one line each."""
    import fsspec

    rows = np.arange(40.0, dtype=np.float32).reshape(4, 10)
    local = synthetic.write_archive(tmp_path / "m.trajkit", np.arange(4), rows)
    prefix = f"memory://trajkit-{uuid.uuid4().hex[:8]}/runs/"
    first = push(local, prefix)
    url = first.archives[0]
    assert url == f"{prefix}m.trajkit" and first.uploaded == len(archive_files(local))
    np.testing.assert_array_equal(open_archive(url).params[:, 2:5], rows[:, 2:5])
    assert validate(url) == [] and push(local, prefix).uploaded == 0

    fsspec.filesystem("memory").pipe_file(f"{url}/snapshots/params/{params_chunk(local, 1).name}", b"\0" * 12)
    problems = validate(url)
    assert [p.message for p in problems] == [f"{url}: snapshots/params row 1 (step 1) chunk c.1.0 is truncated "
                                             "(12 of 40 bytes: a torn write); run `trajkit repair` to keep row 0 "
                                             "and drop the rest"]
    with pytest.raises(ArchiveError, match=r"row 1 chunk c.1.0 is truncated; run `trajkit validate` on the local"):
        open_archive(url).params[:, :]
    fsspec.filesystem("memory").rm(prefix.removeprefix("memory://"), recursive=True)


# -- `trajkit record --out s3://...`: each point recorded locally, pushed, ensemble.json last ------------------

TINY = ['data.name="teacher"', "data.n_train=48", "data.n_test=16", "data.dim=4", "model.hidden=[5]",
        'loss.name="quadratic_hinge"', "run.steps=30", 'snapshots.schedule="linear"', "snapshots.every=5",
        'dynamics.kind="langevin"', "dynamics.lr=0.1", "dynamics.temperature=0.01", "run.replicas=2",
        "sweep.dynamics.temperature=[0.001, 0.01]"]


def _same_runs_at(ref: dict, url: str) -> None:
    from trajkit.archive.ensemble_file import read_ensemble_file

    doc = read_ensemble_file(url)
    assert [r["status"] for r in doc["runs"]] == ["done"] * len(ref["runs"])
    for a, b in zip(ref["runs"], doc["runs"], strict=True):
        x, y = open_archive(a["path"]), open_archive(f"{url}/{b['path']}")
        np.testing.assert_array_equal(x.steps, y.steps)
        np.testing.assert_array_equal(x.params[:, :], y.params[:, :])
        assert y.params.dtype == x.params.dtype
        for k in x.trace:
            np.testing.assert_array_equal(x.trace[k], y.trace[k])
        for k in x.metrics:
            np.testing.assert_array_equal(x.metrics[k], y.metrics[k])


@pytest.mark.slow
def test_record_to_a_url_on_a_local_cluster_equals_a_local_sweep_and_resumes(bucket, tmp_path):
    distributed = pytest.importorskip("distributed", reason="the cluster sweep needs trajkit[dask]")
    from trajkit.experiments import run_experiment

    ref = run_experiment(None, tmp_path / "ref", TINY, quiet=True, threads=1)
    url = f"s3://{bucket}/ens"
    # workers started now inherit the AWS environment that points at the loopback server
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  host="127.0.0.1", silence_logs=50) as cluster, \
            distributed.Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        summary = run_experiment(None, url + "/", TINY, quiet=True, threads=1, scheduler=client)
    assert summary["out"] == url and summary["runs"][0]["path"] == f"{url}/{summary['runs'][0]['name']}"
    _same_runs_at(ref, url)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    doc = json.loads(fs.cat_file(f"{bucket}/ens/ensemble.json"))
    names = [r["path"] for r in doc["runs"]]
    # a client that died after run 1 was pushed but before ensemble.json said so, and a point (runs 2, 3)
    # whose pushes were cut off before their roots went up
    doc["runs"][1].update(status="pending", run_id=None)
    for r in doc["runs"][2:]:
        r.update(status="pending", run_id=None)
        fs.rm_file(f"{bucket}/ens/{r['path']}/zarr.json")
    fs.pipe_file(f"{bucket}/ens/ensemble.json", json.dumps(doc).encode())
    kept = {k: v["ETag"] for k, v in fs.find(f"{bucket}/ens/{names[0]}", detail=True).items()}
    kept.update({k: v["ETag"] for k, v in fs.find(f"{bucket}/ens/{names[1]}", detail=True).items()})
    run_experiment(None, url, TINY, quiet=True, threads=1)        # resumed in-process: same protocol
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    after = {k: v["ETag"] for n in names[:2] for k, v in fs.find(f"{bucket}/ens/{n}", detail=True).items()}
    assert after == kept                                          # finished runs skipped, untouched
    _same_runs_at(ref, url)                                       # the restarted point equals the local one


def test_record_to_a_url_with_storage_options_needs_no_aws_environment(bucket, s3_server, monkeypatch, tmp_path):
    """``trajkit record --out URL --storage-options JSON``: the endpoint and credentials come from the flag alone
    (the AWS environment points nowhere), for the pushes, the ensemble.json and the resume's reading back."""
    from trajkit.experiments import run_experiment

    ref = run_experiment(None, tmp_path / "ref", TINY, quiet=True, threads=1)
    (tmp_path / "exp.toml").write_text("")
    options = json.dumps({"endpoint_url": s3_server, "key": "testing", "secret": "testing"})
    args = ["record", "--config", str(tmp_path / "exp.toml"), "--out", f"s3://{bucket}/ens/", "-q", "--threads", "1",
            *[a for s in TINY for a in ("--set", s)]]
    _aws_env(monkeypatch, tmp_path, "http://127.0.0.1:9", credentials=False, fresh=True)   # nothing listens there
    line = _one_error_line(CliRunner().invoke(cli, args), "trajkit: error: ")
    assert f"s3://{bucket}/ens" in line                          # without the flag: one line, nothing recorded
    res = CliRunner().invoke(cli, [*args, "--storage-options", options])
    assert res.exit_code == 0, res.output
    _aws_env(monkeypatch, tmp_path, s3_server, fresh=True)
    _same_runs_at(ref, f"s3://{bucket}/ens")
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    etags = {k: v["ETag"] for k, v in fs.find(f"{bucket}/ens", detail=True).items() if "ensemble.json" not in k}
    _aws_env(monkeypatch, tmp_path, "http://127.0.0.1:9", credentials=False, fresh=True)
    res = CliRunner().invoke(cli, [*args, "--storage-options", options])   # the rerun reads the state back
    assert res.exit_code == 0, res.output
    _aws_env(monkeypatch, tmp_path, s3_server, fresh=True)
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    assert {k: v["ETag"] for k, v in fs.find(f"{bucket}/ens", detail=True).items()
            if "ensemble.json" not in k} == etags                # every run found done at the URL: none redone
    local = CliRunner().invoke(cli, [*args[:4], str(tmp_path / "here"), *args[5:], "--storage-options", options])
    line = _one_error_line(local, "trajkit: error: ")
    assert "--storage-options" in line and "local directory" in line and not (tmp_path / "here").exists()


def test_record_to_a_missing_bucket_is_one_line(bucket, tmp_path):
    (tmp_path / "exp.toml").write_text("")
    res = CliRunner().invoke(cli, ["record", "--config", str(tmp_path / "exp.toml"), "--out",
                                   f"s3://{bucket}-missing/ens/", "-q", *[a for s in TINY for a in ("--set", s)]])
    assert res.exit_code != 0
    assert f"bucket '{bucket}-missing' does not exist" in res.output and "Traceback" not in res.output


def test_run_ensemble_refuses_a_url_in_one_line():
    from trajkit.errors import ConfigError
    from trajkit.experiments.runner import run_ensemble

    with pytest.raises(ConfigError, match=r"^--out s3://b/ens/: record to a URL with .*run_experiment"):
        run_ensemble(None, "s3://b/ens/", TINY, quiet=True)
    assert not os.path.exists("s3:")                              # no local directory named after the URL
