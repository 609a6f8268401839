"""Registry retention: ``reviews models prune --keep N`` and the nightly run's ``keep_versions``.

A prune keeps the N newest committed versions and, whatever their age, the champion and every
version in its rollback history (``ModelRegistry.champion_history()``): a rollback always finds
its target.  Everything else goes, audited (``audit/...-prune.json``: what was removed, what was
kept and why).

A version is removed commit marker first: its ``metadata.json`` is deleted before any other
file, so from that moment ``versions()`` / ``metadata()`` no longer see it and nothing can load
a half-removed version (a folder without ``metadata.json`` is invisible, like an unfinished
registration).  A :data:`REMOVING` marker written before that tells a later prune that such a
folder is a removal to finish, not a registration still being written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from infra import storage
from models.registry import ModelRegistry, RegistryError

REMOVING = "removing.json"


@dataclass
class PrunePlan:
    keep: int
    kept: dict[str, list[str]] = field(default_factory=dict)  # version -> why it stays
    remove: list[str] = field(default_factory=list)           # committed versions that go, oldest first
    unfinished: list[str] = field(default_factory=list)       # removals an earlier prune did not finish
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_prune(registry: ModelRegistry, keep: int) -> PrunePlan:
    """What a prune keeping the ``keep`` newest versions would remove and keep, and why."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise RegistryError(f"{registry.root.uri}: keep must be a whole number >= 1 (the newest versions "
                            f"kept), got {keep!r}")
    names = [m["version"] for m in registry.versions()]  # oldest first
    champion, history = registry.champion(), set(registry.champion_history())
    plan = PrunePlan(keep=keep)
    for rank, version in enumerate(reversed(names)):
        why = []
        if rank < keep:
            why.append(f"one of the {keep} newest")
        if version == champion:
            why.append("champion")
        if version in history:
            why.append("in the champion's rollback history")
        if why:
            plan.kept[version] = why
        else:
            plan.remove.insert(0, version)
    versions_dir = registry.root.join("versions")
    committed = set(names)
    plan.unfinished = [name for name in storage.list_dirs(versions_dir)
                       if name not in committed and storage.exists(versions_dir.join(name, REMOVING))]
    return plan


def _remove(registry: ModelRegistry, version: str, committed: bool) -> None:
    vdir = registry.root.join("versions", version)
    if committed:
        storage.write_json(vdir.join(REMOVING), {"version": version})
        storage.delete_file(vdir.join("metadata.json"))  # the commit marker: invisible from here on
    for info in storage.list_files(vdir):
        if info.base_name != REMOVING:
            storage.delete_file(storage.Location(vdir.fs, info.path, info.path))
    storage.delete_file(vdir.join(REMOVING))  # last: until here a later prune knows to finish this
    storage.remove_empty_dir(vdir)


def prune(registry: ModelRegistry, keep: int, dry_run: bool = False, actor: str = "user") -> PrunePlan:
    """Remove every version that :func:`plan_prune` does not keep (``dry_run``: nothing), audited."""
    plan = plan_prune(registry, keep)
    plan.dry_run = dry_run
    if dry_run:
        return plan
    for version in plan.unfinished:
        _remove(registry, version, committed=False)
    for version in plan.remove:
        _remove(registry, version, committed=True)
    if plan.remove or plan.unfinished:
        registry.audit("prune", {"actor": actor, "keep": keep, "removed": plan.remove,
                                 "finished_removals": plan.unfinished, "kept": plan.kept})
    return plan
