"""``coordinator verify``: a Jepsen-style checker shipped with the product.

Client processes run random session and compare-and-set operations against Redis
while nemeses inject faults; every operation is recorded and then checked:
linearizability of each agent's record (:mod:`.checker`), the audit stream and the
history one for one, versions, fencing and stale sessions (:mod:`.invariants`).
"""

from coordinator.verify.report import VerifyReport
from coordinator.verify.runner import VerifyOptions, run_verify

__all__ = ["VerifyOptions", "VerifyReport", "run_verify"]
