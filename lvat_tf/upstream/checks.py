"""One held (or reported) comparison against an upstream golden value, and its measures.

Shared by the single-step fixture checks (fixtures.py) and the training-step
replay (train_fixture.py).
"""
import dataclasses

import numpy as np


@dataclasses.dataclass
class Check:
    name: str
    value: float
    limit: float
    kind: str  # "max" (value <= limit) or "min" (value >= limit) or "info"

    @property
    def ok(self) -> bool:
        if self.kind == "info":
            return True
        return self.value <= self.limit if self.kind == "max" else self.value >= self.limit

    def __str__(self):
        rel = {"max": "<=", "min": ">=", "info": "(reported, not held:"}[self.kind]
        tail = ")" if self.kind == "info" else ""
        status = "ok" if self.ok else "FAIL"
        return f"{self.name:28s} {self.value:.7g}  {rel} {self.limit:.5g}{tail}  {status}"


def relative_error(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def per_sample_cosine(a, b) -> np.ndarray:
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
