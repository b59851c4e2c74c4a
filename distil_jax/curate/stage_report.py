"""Per-stage accounting for the manifest: records in, kept, added, filtered and failed by reason."""

from __future__ import annotations

import collections
import dataclasses


@dataclasses.dataclass
class StageReport:
  name: str
  records_in: int = 0
  records_out: int = 0
  added: int = 0  # new records this stage created (expansion, language balancing)
  filtered: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  failed: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  kept_unchanged: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  seconds: float = 0.0

  def as_dict(self) -> dict:
    return {
        "name": self.name,
        "in": self.records_in,
        "out": self.records_out,
        "added": self.added,
        "filtered": dict(sorted(self.filtered.items())),
        "failed": dict(sorted(self.failed.items())),
        "kept_unchanged": dict(sorted(self.kept_unchanged.items())),
        "seconds": round(self.seconds, 3),
    }
