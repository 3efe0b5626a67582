"""``export.<name>``: one task per destination, and what makes each export happen once.

The destination task (lease, attempts, result), the dependents and successors
it starts when it ends (``followers``), waits for call slots that cost no
attempt (``slot_waits``) and the retry policy.
"""
