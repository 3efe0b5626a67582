"""A job's own tasks and what makes every run end.

``export.record`` and ``export.finish`` (``job_tasks``), telling a finished run
to whoever listens (``announce``, ``notify``: the webhook and the callback), and
the sweep that ends, resends or finishes whatever a dead worker left.
"""
