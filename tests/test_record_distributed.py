"""Distributed recording with real gloo process groups (2–3 spawned CPU ranks on 127.0.0.1).

A DDP run and an FSDP2 (``fully_shard``) run recorded from several ranks give archives equal, file for
file and byte for byte, to what one process writes from the same gathered parameters and logged losses —
except what legitimately differs: ``snapshots/time`` (the wall clock), and in the root metadata ``run_id``,
``created`` and ``distributed`` (world size, backend, replicated/sharded). Ranks that disagree fail
together with one line, and so do all ranks when one rank's chunk write fails; a 2-rank archive resumes
with 3 ranks, its online two-time sums too; a rank SIGKILLed inside a snapshot leaves
an archive that validates with only the snapshots committed before it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import trajkit
from trajkit.archive import format as fmt
from trajkit.archive.online import SUMS, online_rows
from trajkit.online import TwoTime
from trajkit.record.distributed import TIMEOUT_ENV, plan_segments

sys.path.insert(0, str(Path(__file__).parent / "helpers"))
import dist_ranks

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="torch.distributed with the gloo backend is not available in this build")

SCHED = trajkit.schedules.explicit([0, 1, 2, 4, 7])
RESUME_SCHED = trajkit.schedules.explicit([0, 1, 2, 4, 7, 9, 12])
#: root metadata keys that differ between a distributed run and its single-process twin
DIFFERING_METADATA = ("run_id", "created", "distributed")


@pytest.fixture
def ranks_env(monkeypatch):
    monkeypatch.setenv(TIMEOUT_ENV, "30")   # inherited by the spawned ranks: no collective waits longer


def _replay(path: Path, ref: dict, schedule, resume: str = "never", truncate_at: int | None = None,
            online: TwoTime | None = None) -> None:
    """What one process writes from the gathered parameters and rank 0's losses of ``ref``."""
    model = dist_ranks.build_model()
    with trajkit.Recorder(path, model, schedule=schedule, resume=resume, online=online) as rec:
        for k, vec, loss in zip(ref["steps"], ref["params"], ref["loss"], strict=True):
            if truncate_at is not None and k < truncate_at:
                continue
            torch.nn.utils.vector_to_parameters(vec, model.parameters())
            rec.step(k, loss=loss, epoch=k / 10)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name != fmt.LOCK_FILE}


def assert_same_archive(got: Path, want: Path) -> None:
    a, b = _files(got), _files(want)
    assert sorted(a) == sorted(b)
    time_chunks = [k for k in a if k.startswith(fmt.TIME + "/c")]
    assert time_chunks, "snapshots/time has chunk files"
    for key in a:
        if key in time_chunks or key == "zarr.json":
            continue
        assert a[key] == b[key], f"{key} differs"
    meta_a = trajkit.open_archive(got).metadata
    meta_b = trajkit.open_archive(want).metadata
    assert {k: v for k, v in meta_a.items() if k not in DIFFERING_METADATA} == \
           {k: v for k, v in meta_b.items() if k not in DIFFERING_METADATA}
    arch = trajkit.open_archive(got)
    assert np.all(np.diff(arch.times) > 0)


def test_plan_gives_every_chunk_one_owner_and_every_column_one_provider():
    # two ranks each holding half of a 100-column tensor and all of a 10-column replicated one
    holdings = [[(0, 50), (100, 110)], [(50, 100), (100, 110)]]
    owners, segments = plan_segments(holdings, 110, 16)
    assert len(owners) == 7
    assert owners[0] == 0 and owners[1] == 0 and owners[4] == 1 and owners[5] == 1   # chunks inside one shard
    covered = np.zeros(110, int)
    for s in segments:
        covered[s.start:s.stop] += 1
        assert s.owner == owners[s.start // 16] and s.start // 16 == (s.stop - 1) // 16
        assert any(a <= s.start and s.stop <= b for a, b in holdings[s.provider])
    assert (covered == 1).all()
    # chunk 3 = columns 48..63: rank 0 holds 48, 49, rank 1 the other 14 -> rank 1 owns it, rank 0 sends 2
    assert owners[3] == 1
    assert [(s.start, s.stop, s.provider) for s in segments if s.start // 16 == 3] == [(48, 50, 0), (50, 64, 1)]


def test_plan_refuses_columns_no_rank_holds():
    with pytest.raises(trajkit.TrajkitError, match=r"no rank holds parameter columns \[40, 48\)"):
        plan_segments([[(0, 40)], [(50, 60)]], 60, 16)


def test_process_group_without_torch_distributed_is_refused(tmp_path):
    assert not torch.distributed.is_initialized()
    with pytest.raises(trajkit.TrajkitError, match=r"process_group given but torch\.distributed is not initialised"):
        trajkit.Recorder(tmp_path / "a.trajkit", torch.nn.Linear(2, 2), process_group=object())
    assert not (tmp_path / "a.trajkit").exists()


def test_a_group_of_one_rank_records_as_a_single_process(tmp_path):
    import datetime

    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{dist_ranks.free_port()}", rank=0,
                                         world_size=1, timeout=datetime.timedelta(seconds=30))
    try:
        with trajkit.Recorder(tmp_path / "a.trajkit", torch.nn.Linear(2, 2), schedule=SCHED) as rec:
            assert rec._dist is None
            rec.step(0)
        assert "distributed" not in trajkit.open_archive(tmp_path / "a.trajkit").metadata
    finally:
        torch.distributed.destroy_process_group()


def test_bad_timeout_setting_is_named(monkeypatch):
    from trajkit.record.distributed import timeout_seconds

    monkeypatch.setenv(TIMEOUT_ENV, "soon")
    with pytest.raises(trajkit.TrajkitError, match=r"TRAJKIT_DIST_TIMEOUT='soon' must be a positive number"):
        timeout_seconds()
    monkeypatch.setenv(TIMEOUT_ENV, "2.5")
    assert timeout_seconds() == 2.5


@pytest.mark.slow
def test_record_ddp_and_fsdp2_equal_single_process_then_resume_with_three_ranks(tmp_path, ranks_env):
    out = tmp_path / "runs"
    out.mkdir()
    codes, results = dist_ranks.launch("record", 2, out)
    assert codes == [0, 0], [r.get("crash") for r in results]
    assert all("crash" not in r for r in results), [r.get("crash") for r in results]

    # ranks that disagree fail together, with one line each, and write nothing
    for res in results:
        kind, msg = res["errors"]["schedule"]
        assert kind == "DistributedError" and "\n" not in msg
        assert "ranks disagree on the schedule (rank 1 differs from rank 0)" in msg
        kind, msg = res["errors"]["layout"]
        assert kind == "DistributedError" and "ranks disagree on the layout" in msg
        kind, msg = res["errors"]["online_resume"]   # rank 0's check reaches rank 1 (no wait for a timeout)
        assert "ddp.trajkit: the archive was recorded without online observables" in msg and "\n" not in msg
    assert [r["errors"]["online_resume"][0] for r in results] == ["TrajkitError", "DistributedError"]
    assert not (out / "bad_schedule.trajkit").exists() and not (out / "bad_layout.trajkit").exists()

    # DDP: rank 0 records as one process does; the other rank has no writer
    assert results[0]["ddp_mode"] == (False, True, "ArchiveWriter")
    assert results[1]["ddp_mode"] == (False, False, "RankArchive")
    assert [r["sums"] for r in results] == [[3.0, 30.0], [3.0, 30.0]]   # all_reduce_sums: 1 + 2, 10 + 20
    ref = tmp_path / "ref"
    ref.mkdir()
    _replay(ref / "ddp.trajkit", results[0]["ddp"], SCHED)
    assert_same_archive(out / "ddp.trajkit", ref / "ddp.trajkit")
    assert trajkit.open_archive(out / "ddp.trajkit").metadata["distributed"] == {
        "world_size": 2, "backend": "gloo", "parameters": "replicated"}

    # FSDP2: both ranks write chunks (small-chunk archive: each rank owns some of the 7 chunks)
    _replay(ref / "fsdp.trajkit", results[0]["fsdp"], SCHED)
    assert_same_archive(out / "fsdp.trajkit", ref / "fsdp.trajkit")
    owned = [r["owned"] for r in results]
    assert sorted(owned[0] + owned[1]) == list(range(7)) and owned[0] and owned[1]
    dist_ranks.precreate_small_chunks(ref / "fsdp_small.trajkit")
    _replay(ref / "fsdp_small.trajkit", results[0]["fsdp"], SCHED, resume="allow")
    assert_same_archive(out / "fsdp_small.trajkit", ref / "fsdp_small.trajkit")
    arch = trajkit.open_archive(out / "fsdp_small.trajkit")
    assert arch.metadata["layout"] == trajkit.open_archive(ref / "fsdp.trajkit").metadata["layout"]
    first = results[0]["fsdp"]
    assert np.array_equal(arch.params[3, :], first["params"][4].numpy())   # the full, unsharded vector

    # a rank whose chunk write fails: every rank raises, the snapshot is not committed
    for res in results:
        kind, msg = res["write_failure"]
        assert kind == "DistributedError" and "a rank failed to write its chunks of the snapshot at step 2" in msg
    assert "No space left on device (injected)" in results[1]["write_failure"][1]
    assert trajkit.open_archive(out / "fsdp_fail.trajkit").steps.tolist() == [0, 1]
    assert trajkit.archive.validate(out / "fsdp_fail.trajkit") == []

    # resume the 2-rank archive with 3 ranks (the archive is unsharded: any world size continues it)
    codes, results3 = dist_ranks.launch("resume", 3, out)
    assert codes == [0, 0, 0], [r.get("crash") for r in results3]
    second = results3[0]
    assert second["start"] == 7
    assert torch.equal(second["fsdp"]["params"][0], first["params"][7])   # restore() filled every shard
    assert sorted(j for r in results3 for j in r["owned"]) == list(range(7))
    _replay(ref / "fsdp_small.trajkit", second["fsdp"], RESUME_SCHED, resume="must")
    assert_same_archive(out / "fsdp_small.trajkit", ref / "fsdp_small.trajkit")
    resumed = trajkit.open_archive(out / "fsdp_small.trajkit")
    assert resumed.steps.tolist() == [0, 1, 2, 4, 7, 9, 12]
    assert resumed.trace["step"].tolist() == list(range(15))

    # the online sums, resumed by 3 ranks at step 7 (w(1), w(4) read back from the snapshots, each rank its
    # shards), equal one uninterrupted process's over the same gathered parameters (the ranks' partial sums
    # add in another order: 1e-12 relative)
    assert second["online_start"] == 7
    whole = {key: first[key][:7] + second["fsdp"][key] for key in ("steps", "params", "loss")}
    assert whole["steps"] == list(range(15))
    _replay(ref / "online.trajkit", whole, RESUME_SCHED, online=TwoTime(**dist_ranks.ONLINE_R))
    got = online_rows(trajkit.open_archive(out / "fsdp_online.trajkit"))
    want = online_rows(trajkit.open_archive(ref / "online.trajkit"))
    assert got.step.tolist() == want.step.tolist() and got.tw_step.tolist() == want.tw_step.tolist()
    assert got.step.tolist().count(7) == 1 and max(got.step) == 12   # the row at 7 measured once, after resume
    np.testing.assert_array_equal(got.epsilon, want.epsilon)
    for name in SUMS:
        np.testing.assert_allclose(got.sums[name], want.sums[name], rtol=1e-12, atol=0)
        np.testing.assert_allclose(got.per_layer[name], want.per_layer[name], rtol=1e-12, atol=1e-300)
    assert trajkit.archive.validate(out / "fsdp_online.trajkit") == []


@pytest.mark.slow
def test_sigkill_of_a_rank_inside_a_snapshot_leaves_only_committed_snapshots(tmp_path, ranks_env):
    from click.testing import CliRunner

    from trajkit.cli import cli

    out = tmp_path / "runs"
    out.mkdir()
    codes, results = dist_ranks.launch("kill", 2, out)
    assert codes[1] == -9                      # rank 1 died by SIGKILL after writing its chunks of step 5
    assert codes[0] == 0, results[0].get("crash")
    kind, msg = results[0]["error"]
    assert kind == "DistributedError" and "step 5" in msg and "\n" not in msg
    path = out / "killed.trajkit"
    res = CliRunner().invoke(cli, ["validate", str(path)])
    assert res.exit_code == 0, res.output
    arch = trajkit.open_archive(path)
    assert arch.steps.tolist() == [0, 1, 2, 3, 4]
    assert not any(row >= 5 for row, _ in fmt.params_chunk_files(path / fmt.PARAMS, fmt.PARAMS_SEPARATOR))
