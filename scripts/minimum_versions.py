"""Print the lowest versions sessionmeta's requirements allow, one pip pin a line.

    python scripts/minimum_versions.py postgres mysql

pins every runtime requirement and those of the extras named, each at its ``>=`` bound
(``pydantic==2.11``, ``sqlalchemy[asyncio]==2.0.38``, ...), for CI's minimum-versions
job. It reads the installed project's metadata, so it runs in the venv being pinned; a
requirement without a lower bound is an error, so none goes untested.
"""

from __future__ import annotations

import sys
from importlib.metadata import requires

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


def minimum_pins(extras: list[str]) -> list[str]:
    """``name[extras]==floor`` for the runtime requirements and those of ``extras``."""
    floors_by_name: dict[str, tuple[str, str]] = {}
    for line in requires("sessionmeta") or []:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is not None and not any(
            marker.evaluate({"extra": extra}) for extra in ["", *extras]
        ):
            continue
        floors = [spec.version for spec in requirement.specifier if spec.operator == ">="]
        if len(floors) != 1:
            raise SystemExit(f"{line!r}: a requirement needs exactly one lower bound (>=)")
        name = canonicalize_name(requirement.name)
        if name in floors_by_name and Version(floors_by_name[name][1]) >= Version(floors[0]):
            continue  # an extra asks again for what the runtime requirements already pin
        features = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        floors_by_name[name] = (f"{requirement.name}{features}", floors[0])
    return sorted(f"{spelled}=={floor}" for spelled, floor in floors_by_name.values())


if __name__ == "__main__":
    print("\n".join(minimum_pins(sys.argv[1:])))
