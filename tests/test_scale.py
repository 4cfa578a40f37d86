"""``attrboost index --engine ray`` (:mod:`attrboost.search.scale`) against the single-process path on 40 generated
images (+ one undecodable file): same ids and vectors, same search results; a killed actor survived; a rerun
that skips finished shards; a two-node cluster on this machine (marked ``cluster``: ``-m "not cluster"``
deselects it); the sizing table against hand arithmetic; the message without Ray installed."""
from __future__ import annotations

import json
import os
import shutil
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest

from attrboost.search import scale
from attrboost.search.cli import main
from attrboost.search.index import VectorIndex

RAY = ["--engine", "ray", "--shard-size", "8", "--batch-size", "8", "-q"]  # 41 files: 6 shards


@pytest.fixture(scope="module")
def work(tmp_path_factory, shapes_model):
    """The 40 images of conftest's shapes_model copied here with zz_broken.jpg added (as in test_cli), and their
    single-process index made with the shared model."""
    root = tmp_path_factory.mktemp("scale")
    images = shutil.copytree(shapes_model.images, root / "cat" / shapes_model.images.name)
    (images / "zz_broken.jpg").write_bytes(b"\xff\xd8 truncated")
    assert main(["index", "--model", str(shapes_model.model), "--images", str(images), "--out", str(root / "local"),
                 "-q"]) == 0
    return root, images


@pytest.fixture(scope="module")
def ray_local(tmp_path_factory):
    """One local Ray (2 CPUs) for the module; its workers see the fault-injection marker path."""
    ray = pytest.importorskip("ray")
    marker = tmp_path_factory.mktemp("fault") / "crash-once"
    old = os.environ.get(scale.FAIL_ONCE_ENV)
    os.environ[scale.FAIL_ONCE_ENV] = str(marker)
    # a new local Ray, never one already running here (or the stale address file of a crashed one)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield marker
    ray.shutdown()
    if old is None:
        os.environ.pop(scale.FAIL_ONCE_ENV, None)
    else:
        os.environ[scale.FAIL_ONCE_ENV] = old


@pytest.fixture(scope="module")
def built(work, shapes_model, ray_local):
    """The Ray index of the 40 images, made while its first actor is killed (the fault-injection marker: the first
    actor call removes it and exits its process), so the equality tests below check a run that survived a dead
    actor; one Ray run less than testing the two apart (each run starts an actor: ~20 CPU-seconds here)."""
    root, images = work
    ray_local.touch()
    assert main(["index", "--model", str(shapes_model.model), "--images", str(images), "--out", str(root / "ray"),
                 *RAY]) == 0
    return root / "ray"


def _vectors(index: VectorIndex) -> np.ndarray:
    return index._faiss.reconstruct_n(0, index._faiss.ntotal)  # flat: the added vectors, L2-normalised


def _same_as_local(root, out, min_cos=0.9999):
    got, want = VectorIndex.load(out), VectorIndex.load(root / "local")
    assert got.ids.tolist() == want.ids.tolist() and got.paths.tolist() == want.paths.tolist()
    assert len(set(got.ids.tolist())) == len(got) == 40
    cos = (_vectors(got) * _vectors(want)).sum(1)
    assert cos.min() >= min_cos, cos.min()
    return json.loads((out / "index.json").read_text())


def _search(capsys, index, queries):
    capsys.readouterr()
    assert main(["search", "--index", str(index), *map(str, queries), "-k", "5", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_ray_index_equals_single_process(work, built, capsys):
    root, images = work
    meta = _same_as_local(root, built)
    assert meta["kind"] == "flat" and meta["n"] == 40
    job = meta["report"]["scale"][0]
    assert job["embedded_shards"] == 6 and job["shards"] == 6
    assert job["actors"] == 1 and job["cpus_per_actor"] == 1.75  # default: the 2 CPUs less one decoding share
    queries = [images / "s3.jpg", images / "s20.jpg"]
    got, want = _search(capsys, built, queries), _search(capsys, root / "local", queries)
    for g, w in zip(got, want):
        assert [r["id"] for r in g["results"]] == [r["id"] for r in w["results"]]
        np.testing.assert_allclose([r["score"] for r in g["results"]], [r["score"] for r in w["results"]], atol=1e-4)
        assert g["predicted"] == w["predicted"]


def test_undecodable_image_counted_and_listed(work, built):
    root, images = work
    got = json.loads((built / "index.json").read_text())["report"]["undecodable"]
    want = json.loads((root / "local" / "index.json").read_text())["report"]["undecodable"]
    assert got == want and [f["path"] for f in got] == [str(images / "zz_broken.jpg")]
    assert "cannot decode the image" in got[0]["error"]


def test_rerun_skips_completed_shards(work, shapes_model, built, tmp_path, capsys):
    root, images = work
    cmd = ["index", "--model", str(shapes_model.model), "--images", str(images), *RAY]
    # every shard written, the index not yet (an interrupted run): nothing is embedded again
    shutil.copytree(built / "shards", tmp_path / "all" / "shards")
    capsys.readouterr()
    assert main([*cmd, "--out", str(tmp_path / "all")]) == 0
    assert "embedded 0 shard(s), reused 6 (of 6" in capsys.readouterr().err
    assert json.loads((tmp_path / "all" / "index.json").read_text())["report"]["scale"][0]["embedded_shards"] == 0
    np.testing.assert_array_equal(_vectors(VectorIndex.load(tmp_path / "all")), _vectors(VectorIndex.load(built)))
    # a missing shard and a truncated one are embedded again, the other four reused
    shards = shutil.copytree(built / "shards", tmp_path / "part" / "shards")
    (shards / "shard-000001.parquet").unlink()
    data = (shards / "shard-000003.parquet").read_bytes()
    (shards / "shard-000003.parquet").write_bytes(data[: len(data) // 2])
    assert main([*cmd, "--out", str(tmp_path / "part")]) == 0
    assert "embedded 2 shard(s), reused 4 (of 6" in capsys.readouterr().err
    _same_as_local(root, tmp_path / "part")
    # a shard made by another model is not reused
    plan = scale.Plan([f"s{i}" for i in range(8)], [str(images / f"s{i}.jpg") for i in range(8)], shards,
                      shard_size=8, model={"head_sha256": "another"})
    assert plan.read(0) is None


def test_killed_actor_is_survived(work, built, ray_local):
    root, _ = work
    assert not ray_local.exists()  # an actor did die (the marker is gone) while `built` was made
    meta = _same_as_local(root, built)
    assert meta["report"]["scale"][0]["embedded_shards"] == 6


def test_actors_the_cluster_cannot_place_are_a_clear_error(work, shapes_model, ray_local, tmp_path, capsys,
                                                            monkeypatch):
    """An actor asking for more CPUs than the local Ray has would wait for ever; it is an error naming them."""
    root, images = work
    monkeypatch.setattr(scale, "WAIT_FOR_ACTORS_S", 2)
    capsys.readouterr()
    assert main(["index", "--model", str(shapes_model.model), "--images", str(images), "--out", str(tmp_path / "ix"),
                 *RAY, "--cpus-per-actor", "3"]) == 2
    err = capsys.readouterr().err
    assert "did not start 1 actor(s) with 3 CPU and 0 GPU each within 2 s" in err, err[-800:]


def test_default_cpus_per_actor_fill_the_node(ray_local):
    assert scale.default_cpus_per_actor(1) == 1.75 and scale.default_cpus_per_actor(2) == 0.875
    assert scale.default_cpus_per_actor(3, decode_cpus=0.5) == pytest.approx(0.5)


def test_collector_drops_repeated_rows_and_add_shards_checks_every_id(tmp_path):
    ids = [f"i{k}" for k in range(5)]
    paths = [f"/x/{i}.jpg" for i in ids]
    plan = scale.Plan(ids, paths, tmp_path / "shards", shard_size=2, model={"m": 1})  # shards [0,1] [2,3] [4]
    V = np.arange(15, dtype=np.float32).reshape(5, 3) + 1

    def batch(pos):
        return {"pos": np.array(pos), "vector": V[pos], "node": np.array(["n1"] * len(pos), dtype=object),
                "error": np.array(["bad" if p == 4 else "" for p in pos], dtype=object)}

    col = scale._Collector(plan, [0, 1, 2])
    col.add(batch([1, 0, 2]))  # shard 0 complete: written
    col.add(batch([0, 2]))  # shard 0 already written; position 2 already received
    assert col.written == [0] and col.duplicates == 2 and col.missing() == ["i3", "i4"]
    col.add(batch([3, 4]))
    assert col.written == [0, 1, 2] and col.missing() == []
    index = VectorIndex(3)
    n, failed = scale.add_shards(index, plan)
    assert n == 4 and index.ids.tolist() == ids[:4] and index.paths.tolist() == paths[:4]
    assert failed == [{"id": "i4", "path": "/x/i4.jpg", "error": "bad"}]
    np.testing.assert_allclose(_vectors(index), V[:4] / np.linalg.norm(V[:4], axis=1, keepdims=True), rtol=1e-6)
    plan.path(1).unlink()
    with pytest.raises(scale.ScaleError, match="shard 1 .* is missing or incomplete"):
        scale.add_shards(VectorIndex(3), plan)
    with pytest.raises(scale.ScaleError, match=r"1 id\(s\) repeat, e.g. \['i0'\]"):
        scale.Plan([*ids, "i0"], [*paths, "/x/again.jpg"], tmp_path)


def test_sizing_table_matches_hand_arithmetic():
    rows = scale.sizing_table(25.0, rate_per_gpu=311.0, cores_per_machine=16, sizes=(10**6, 10**8),
                              target_hours=8.0, width=1280, add_rate={"flat": 1e6, "ivfpq": 2e4}, train_seconds=600)
    small, big = rows
    # 1M on CPU: 16 x 25 = 400 img/s per machine, 400 x 8 h = 11.52M per machine in 8 h -> 1 machine, 1e6/400 s
    assert small["cpu_machines"] == 1 and small["cpu_hours"] == pytest.approx(1e6 / 400 / 3600)
    assert small["gpu_machines"] == 1 and small["gpu_hours"] == pytest.approx(1e6 / 311 / 3600)
    assert small["kind"] == "flat" and small["index_bytes"] == 10**6 * 1280 * 4
    assert small["build_seconds"] == pytest.approx(1.0)
    # 100M: ceil(1e8 / 11.52e6) = 9 CPU machines, ceil(1e8 / (311 x 28800)) = 12 GPU machines
    assert big["cpu_machines"] == 9 and big["cpu_hours"] == pytest.approx(1e8 / (9 * 400) / 3600)
    assert big["gpu_machines"] == 12 and big["gpu_hours"] == pytest.approx(1e8 / (12 * 311) / 3600)
    # ivfpq on width 1280: 80-byte codes (1280 / 16) + an 8-byte id per vector
    assert big["kind"] == "ivfpq" and big["index_bytes"] == 10**8 * 88
    assert big["build_seconds"] == pytest.approx(600 + 1e8 / 2e4)
    assert big["items_bytes"] == pytest.approx(1e8 * 87)  # the default item_bytes: 55 characters + 32 bytes
    table = scale.sizing_markdown(rows)
    assert "| 100 M | 9 x 7.7 h | 12 x 7.4 h | ivfpq | 8.8 GB | 8.7 GB |" in table


def test_without_ray_the_engine_says_how_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["index", "--model", str(tmp_path), "--images", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--engine", "ray"]) == 2
    assert "pip install 'attrboost[scale]'" in capsys.readouterr().err


def test_ray_options_are_checked(tmp_path, capsys):
    base = ["index", "--model", str(tmp_path), "--images", str(tmp_path), "--out", str(tmp_path / "o")]
    assert main([*base, "--actors", "2"]) == 2
    assert "--actors applies to --engine ray only" in capsys.readouterr().err
    assert main([*base, "--engine", "ray", "--actors", "0"]) == 2
    assert "--actors 0: expected an integer >= 1" in capsys.readouterr().err
    assert main([*base, "--engine", "ray", "--device", "cuda"]) == 2
    assert "--gpus-per-actor" in capsys.readouterr().err
    assert main([*base, "--engine", "ray", "--raw"]) == 2
    assert "--raw with --engine ray: not supported yet" in capsys.readouterr().err


@pytest.mark.cluster
@pytest.mark.slow
def test_two_node_cluster_embeds_every_image_once(work, shapes_model, tmp_path, capsys):
    """Head + one more node (1 CPU each), as Ray's own tests build one; two actors spread over them: 0.75 CPU
    each, so one node cannot hold both (0.5 each let Ray put both on one node), with 0.25 left on each node for
    the decoding tasks; batches of 4 (11 of them) so that both actors get work."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    root, images = work
    ray.shutdown()  # the module's local Ray
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        capsys.readouterr()
        assert main(["index", "--model", str(shapes_model.model), "--images", str(images),
                     "--out", str(tmp_path / "ix"), "--address", cluster.address, "--actors", "2",
                     "--cpus-per-actor", "0.75", *RAY, "--batch-size", "4"]) == 0
    finally:
        ray.shutdown()
        cluster.shutdown()
    # The two actors are placed one per node (0.75 CPU each on 1-CPU nodes) and both are started before the
    # first batch is handed out (scale.WAIT_FOR_ACTORS_S; without it, one actor embedded all 11 batches in a
    # clean-clone CI run while the other was still loading the model), so both nodes embed.
    err = capsys.readouterr().err
    assert "on 2 node(s)" in err, err[-600:]
    meta = _same_as_local(root, tmp_path / "ix")  # every id exactly once, vectors equal to the local path's
    import pyarrow.parquet as pq
    nodes = set()
    for f in sorted((tmp_path / "ix" / "shards").glob("shard-*.parquet")):
        nodes.update(json.loads(pq.read_schema(f).metadata[scale.SHARD_META])["nodes"])
    assert meta["report"]["scale"][0]["nodes"] == len(nodes) == 2
