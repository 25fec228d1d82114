"""The tiny profile makes no network call: HF offline variables plus a socket guard around the real
path a notebook takes (build the world, load a shipped model through kit.llm.models.load, generate, score)."""

import ipaddress
import socket

import pytest

from kit import REPO_DIR
from kit.core.profile import apply_runtime, load_profile

SHIPPED_TEACHER = REPO_DIR / "data" / "models" / "tiny-qwen2vl-teacher"


class NetworkCall(AssertionError):
    pass


@pytest.fixture
def socket_guard(monkeypatch):
    """Refuse every connection that leaves the machine (loopback stays allowed: Jupyter uses it)."""
    attempts = []

    def is_loopback(address) -> bool:
        if isinstance(address, (str, bytes)):  # a unix socket path
            return True
        host = address[0]
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return host == "localhost"

    real_connect = socket.socket.connect

    def guarded_connect(self, address):
        if not is_loopback(address):
            attempts.append(address)
            raise NetworkCall(f"network call to {address}")
        return real_connect(self, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host not in (None, "localhost", "127.0.0.1", "::1"):
            attempts.append(host)
            raise NetworkCall(f"name lookup of {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    real_getaddrinfo = socket.getaddrinfo
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    return attempts


def test_guard_catches_a_real_attempt(socket_guard):
    with pytest.raises(NetworkCall):
        socket.create_connection(("huggingface.co", 443), timeout=1)
    assert socket_guard == ["huggingface.co"]


def test_tiny_profile_sets_offline_mode(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    apply_runtime(load_profile("tiny"))
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1"


@pytest.mark.skipif(not SHIPPED_TEACHER.is_dir(), reason="shipped tiny teacher missing (run `kit models build`)")
def test_tiny_path_runs_without_network(socket_guard, tmp_path, monkeypatch):
    from kit.eval.benchmarks import mathvista
    from kit.llm.models import load
    from kit.tiny.pretrain import mathvista_score
    from kit.tiny.world import WorldConfig, build_world

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = WorldConfig(train_pool=20, mathvista_testmini=8, mathvision_test=4, mathvision_testmini=2,
                         wemath_problems=2, hallusionbench_sets=5, mme_images_per_subtask=2, eaco_images=2,
                         vlfeedback_prompts=2, instructions=2)
    build_world(tmp_path / "world", config, progress=False)
    loaded = load(SHIPPED_TEACHER, device="cpu")
    scores = mathvista_score(loaded.model, loaded.processor, tmp_path / "world")
    assert scores["total"] == len(mathvista.load(tmp_path / "world" / "mathvista")) == 8
    assert socket_guard == []
