"""Release gates: `smoke_test` (does this artifact work?) and `checklist` (is this version ready to ship?).

Both return a Report whose verdict a release script can trust: every step or item carries its status, evidence
and duration, and `passed` is False (exit 1) when any step / required item fails. Registry and input errors raise.
"""

from mlops_cli.gates.checklist import checklist
from mlops_cli.gates.policy import load_policy
from mlops_cli.gates.smoke import smoke_test

__all__ = ["checklist", "load_policy", "smoke_test"]
