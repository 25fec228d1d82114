from __future__ import annotations

import sys

import pytest

from kit import cli
from kit.core import envcheck
from kit.errors import KitError


@pytest.fixture
def fake_machine(monkeypatch: pytest.MonkeyPatch):
    """Pretend a given set of packages is installed and CUDA is (not) available."""

    def configure(installed: set[str], cuda: bool) -> list[str]:
        cuda_queries: list[str] = []

        def cuda_available() -> bool:
            cuda_queries.append("asked")
            return cuda

        monkeypatch.setattr(envcheck, "is_installed", lambda name: name in installed)
        monkeypatch.setattr(envcheck, "cuda_available", cuda_available)
        return cuda_queries

    return configure


def test_torchvision_without_cuda_is_one_sentence_with_the_fix(fake_machine) -> None:
    fake_machine({"torchvision"}, cuda=False)
    with pytest.raises(KitError) as caught:
        envcheck.check_environment()
    message = str(caught.value)
    assert message.startswith("torchvision is installed but this machine has no CUDA")
    assert "image processors" in message
    assert "uninstall -y torchvision`" in message
    assert "\n" not in message
    assert ". " not in message  # one sentence


def test_both_cuda_only_packages_are_named_with_one_uninstall(fake_machine) -> None:
    fake_machine({"torchvision", "unsloth"}, cuda=False)
    with pytest.raises(KitError, match=r"torchvision and unsloth are installed") as caught:
        envcheck.check_environment()
    assert "uninstall -y torchvision unsloth`" in str(caught.value)


def test_cuda_only_packages_are_fine_with_cuda(fake_machine) -> None:
    fake_machine({"torchvision", "unsloth"}, cuda=True)
    envcheck.check_environment()


def test_clean_environment_does_not_ask_torch_about_cuda(fake_machine) -> None:
    cuda_queries = fake_machine(set(), cuda=False)
    envcheck.check_environment()
    assert cuda_queries == []  # importing torch would make every kit command slow


@pytest.mark.parametrize(
    ("installed", "cuda", "backend"),
    [
        ({"unsloth"}, True, "unsloth"),
        ({"unsloth"}, False, "peft"),
        (set(), True, "peft"),
        (set(), False, "peft"),
    ],
)
def test_training_backend(fake_machine, installed: set[str], cuda: bool, backend: str) -> None:
    fake_machine(installed, cuda=cuda)
    assert envcheck.training_backend() == backend


def test_is_installed_finds_a_module_without_importing_it(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "explodes_on_import"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert envcheck.is_installed("explodes_on_import")
    assert "explodes_on_import" not in sys.modules
    assert not envcheck.is_installed("no_such_module_for_seat_kit")


def test_kit_check_prints_versions_and_backend(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(envcheck, "cuda_available", lambda: False)
    assert cli.main(["check"]) == 0
    lines = capsys.readouterr().out.splitlines()
    labels = {line.split("  ")[0].strip(): line for line in lines}
    for label in ("python", "torch", "transformers", "trl", "peft", "papermill", "cuda", "training backend"):
        assert label in labels, f"kit check does not report {label}: {lines}"
    assert labels["cuda"].endswith("not available")
    assert labels["training backend"].endswith("peft")


def test_cli_refuses_to_run_with_torchvision_on_cpu(fake_machine, capsys) -> None:
    fake_machine({"torchvision"}, cuda=False)
    assert cli.main(["check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("kit check: error: torchvision is installed")
