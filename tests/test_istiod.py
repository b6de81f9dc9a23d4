"""The local istiod's push decisions: who gets a fresh mesh.json, and when."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cluster.local.istiod import Istiod, IstiodConfig
from cluster.local.meshpolicy import PodView

SERVER = PodView("shop", "server", {"app": "server"}, "10.0.0.5", "server", meshed=True)


class ListedIstiod(Istiod):
    """The real push logic over a pod list the test controls (pure logic: no API server)."""

    def __init__(self, pods_root: Path) -> None:
        super().__init__(IstiodConfig("https://127.0.0.1:1", "", "", "", str(pods_root), "cluster.local"))
        self.listed: list[tuple[PodView, str]] = []

    def snapshot(self) -> tuple[list[PodView], list[str], list[dict[str, Any]], list[dict[str, Any]]]:
        return [pod for pod, _ in self.listed], [uid for _, uid in self.listed], [], []


@pytest.fixture
def istiod(tmp_path: Path) -> ListedIstiod:
    return ListedIstiod(tmp_path)


def _generation(folder: Path) -> int:
    return int(json.loads((folder / "mesh.json").read_text())["generation"])


def test_a_pod_made_again_under_the_same_name_and_address_gets_its_own_push(istiod: ListedIstiod,
                                                                            tmp_path: Path) -> None:
    folder = tmp_path / "shop" / "server"
    folder.mkdir(parents=True)
    istiod.listed = [(SERVER, "uid-1")]
    istiod.push()
    first = _generation(folder)
    # The pod failed to start and was made again between two polls: same view, new uid, empty directory.
    (folder / "mesh.json").unlink()
    istiod.listed = [(SERVER, "uid-2")]
    istiod.push()
    assert _generation(folder) == first + 1


def test_a_pod_listed_before_its_directory_exists_is_pushed_once_the_directory_appears(
        istiod: ListedIstiod, tmp_path: Path) -> None:
    istiod.listed = [(SERVER, "uid-1")]
    istiod.push()
    folder = tmp_path / "shop" / "server"
    assert not folder.exists()
    assert json.loads((tmp_path / "istiod.json").read_text())["pods"] == []
    folder.mkdir(parents=True)
    istiod.push()
    assert (folder / "mesh.json").exists()
    assert json.loads((tmp_path / "istiod.json").read_text())["pods"] == ["shop/server"]


def test_nothing_changed_means_no_new_generation(istiod: ListedIstiod, tmp_path: Path) -> None:
    folder = tmp_path / "shop" / "server"
    folder.mkdir(parents=True)
    istiod.listed = [(SERVER, "uid-1")]
    istiod.push()
    istiod.push()
    assert _generation(folder) == 1
