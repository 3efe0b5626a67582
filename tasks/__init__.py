"""Celery work: one task per destination, the job's own tasks, canvases and the job API.

Tasks are declared with ``shared_task`` and read their settings from the app's
configuration, so this package never imports the app.
"""
