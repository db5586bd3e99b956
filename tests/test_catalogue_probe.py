import json

import pytest

from placement.core.catalogue import CatalogueError, default_catalogue, get_target, load_catalogue
from placement.lab import probe


def test_catalogue_has_paper_configs_jetsons_and_servers():
    cat = default_catalogue()
    for tid in ("A", "B", "C", "D", "jetson-nano", "orin-nano", "agx-orin", "h100-host", "h200-host"):
        assert tid in cat and cat[tid].source
    assert [cat[t].cpu_cores for t in ("jetson-nano", "orin-nano", "agx-orin")] == [4, 6, 12]
    assert all(cat[t].unified_memory and cat[t].is_edge for t in ("jetson-nano", "orin-nano", "agx-orin"))
    assert cat["A"].gpu_model == "NVIDIA GeForce RTX 3060" and cat["D"].gpu_model == "NVIDIA GeForce RTX 4090"
    # paper A Fig. 1 ordering rests on GPU strength: A < B < C < D
    assert cat["A"].gpu_gflops < cat["B"].gpu_gflops < cat["C"].gpu_gflops < cat["D"].gpu_gflops


def test_unknown_target_lists_known_ids():
    with pytest.raises(KeyError, match="known: A, B"):
        get_target("Z")


def test_bad_catalogue_names_entry_and_field(tmp_path):
    bad = {"schema": "placement.catalogue/1", "targets": [{"id": "x", "kind": "desktop", "cpu_model": "c",
           "cpu_cores": -1, "cpu_gflops": 1, "cpu_tdp_w": 1, "ram_gib": 1}]}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(CatalogueError, match="entry x: field 'cpu_cores'"):
        load_catalogue(path)
    path.write_text("{not json")
    with pytest.raises(CatalogueError, match="not valid JSON"):
        load_catalogue(path)


def test_probe_without_nvidia_driver_returns_cpu_only_target(monkeypatch):
    import pynvml

    def no_driver():
        raise pynvml.NVMLError(pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)

    monkeypatch.setattr(pynvml, "nvmlInit", no_driver)
    target = probe.probe_local()
    assert target.gpu_model is None and not target.has_gpu and target.gpu_gflops == 0
    assert target.cpu_cores >= 1 and target.ram_gib > 0 and "no NVIDIA GPU" in target.source


def test_usable_cores_honours_cgroup_quota(tmp_path):
    cg = tmp_path / "sys/fs/cgroup"
    cg.mkdir(parents=True)
    (cg / "cpu.max").write_text("150000 100000\n")
    assert probe.cgroup_cpu_quota(tmp_path) == 1.5
    assert probe.usable_cores(tmp_path) == 1
    (cg / "cpu.max").write_text("max 100000\n")
    assert probe.cgroup_cpu_quota(tmp_path) is None
