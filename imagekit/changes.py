"""What changed between two builds of a role: packages added, removed and changed
(security updates marked), and the image's size. Read from the manifests, not the images."""

import subprocess
from dataclasses import dataclass, field

from imagekit.manifest import Manifest


@dataclass(frozen=True)
class Change:
    name: str
    old: str
    new: str
    upgrade: bool  # new > old in Debian's version order (else a downgrade)
    security: bool  # the new version came from the security suite


@dataclass
class Changes:
    role: str
    old_build: str
    new_build: str
    added: list[str] = field(default_factory=list)  # "name version"
    removed: list[str] = field(default_factory=list)
    changed: list[Change] = field(default_factory=list)
    size_change_bytes: int = 0

    def summary(self) -> str:
        """One line for the morning report."""
        upgrades = [c for c in self.changed if c.upgrade]
        security = [c for c in upgrades if c.security]
        parts = [f"{len(upgrades)} package{'s' * (len(upgrades) != 1)} upgraded"]
        if security:
            named = ", ".join(f"{c.name} {c.new}" for c in security[:3])
            more = ", ..." if len(security) > 3 else ""
            parts[0] += f", {len(security)} of them security ({named}{more})"
        if downgrades := len(self.changed) - len(upgrades):
            parts.append(f"{downgrades} downgraded")
        if self.added:
            parts.append(f"{len(self.added)} added")
        if self.removed:
            parts.append(f"{len(self.removed)} removed")
        return f"{self.role}: {'; '.join(parts)}"


def compare(old: Manifest, new: Manifest) -> Changes:
    before = {p.name: p for p in old.packages}
    after = {p.name: p for p in new.packages}
    changes = Changes(old.role, old.build_id, new.build_id)
    changes.added = [f"{n} {after[n].version}" for n in sorted(after.keys() - before.keys())]
    changes.removed = [f"{n} {before[n].version}" for n in sorted(before.keys() - after.keys())]
    for name in sorted(before.keys() & after.keys()):
        was, now = before[name], after[name]
        if was.version != now.version:
            upgrade = _newer(now.version, was.version)
            changes.changed.append(Change(name, was.version, now.version, upgrade, now.security))
    if old.image is not None and new.image is not None:
        changes.size_change_bytes = new.image.size_bytes - old.image.size_bytes
    return changes


def _newer(a: str, b: str) -> bool:
    """Debian's own version order (epochs, tildes): dpkg decides, as apt does."""
    return subprocess.run(["dpkg", "--compare-versions", a, "gt", b]).returncode == 0


def table(changes: Changes) -> str:
    """For people: one line per change, then the summary and the size."""
    lines = [f"{changes.role} {changes.old_build} -> {changes.new_build}"]
    for change in changes.changed:
        arrow = "upgraded" if change.upgrade else "DOWNGRADED"
        mark = "  [security]" if change.security else ""
        lines.append(f"  ~ {change.name} {change.old} -> {change.new} ({arrow}){mark}")
    lines += [f"  + {line}" for line in changes.added]
    lines += [f"  - {line}" for line in changes.removed]
    if len(lines) == 1:
        lines.append("  no package changed")
    mib = changes.size_change_bytes / (1 << 20)
    lines.append(f"{changes.summary()}; image {mib:+.1f} MiB")
    return "\n".join(lines)
