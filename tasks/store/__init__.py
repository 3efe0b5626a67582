"""The job record in Redis, and nothing of Celery: what was asked, every attempt, the outcome.

``keys`` names every key, ``scripts`` holds every Lua script, ``model`` says
what a job and a destination's entry are, ``job_store`` reads and writes them;
``index`` and ``counters`` keep the indexes and metrics, ``lease`` and
``call_log`` what one export at one destination holds while it runs.
"""
