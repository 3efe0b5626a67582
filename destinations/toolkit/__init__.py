"""What a service destination is built from: HTTP with a total deadline per call, a
shared call limiter, the call log a create resumes from, and the export guard."""
